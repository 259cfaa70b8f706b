// How the console writes figures and times: shared by the fleet and device pages.
"use strict";
window.ConsoleFormat = (function () {
  const metric = {
    cpu_pct: (v) => v.toFixed(0) + " %",
    mem_pct: (v) => v.toFixed(0) + " %",
    disk_pct: (v) => v.toFixed(0) + " %",
    temp_c: (v) => v.toFixed(1) + " °C",
    load1: (v) => v.toFixed(2),
    uptime_s: (v) => {
      const d = Math.floor(v / 86400), h = Math.floor((v % 86400) / 3600), m = Math.floor((v % 3600) / 60);
      return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min`;
    },
  };

  function ago(seconds) {
    if (seconds < 90) return "just now";
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} d ago`;
  }

  return Object.freeze({ metric, ago });
})();
