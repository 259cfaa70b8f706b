// Device page: the capability summary panels (device/summaries.html), formatted by each field's kind
// by the same rules as appliance/console/summaries.py, refreshed from
// /api/device/<id>/summaries every 30 s while the page is visible.
"use strict";
(function () {
  const REFRESH_MS = 30000;
  const DASH = "–";
  const t = (msg, vars) => window.ConsoleFormat.t(msg, vars);

  function number(v) {
    return String(+v.toFixed(1));
  }

  function bytes(v) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return i === 0 ? `${Math.trunc(v)} B` : `${number(v)} ${units[i]}`;
  }

  function seconds(v) {
    if (v < 90) return `${number(v)} s`;
    let m = Math.floor(v / 60);
    if (m < 90) return `${m} min`;
    let h = Math.floor(m / 60);
    m %= 60;
    if (h < 36) return `${h} h ${m} min`;
    const d = Math.floor(h / 24);
    h %= 24;
    return `${d} d ${h} h`;
  }

  function localTime(ms) {
    return new Date(ms).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }

  function ago(ms) {
    const f = window.ConsoleFormat;
    return f ? ` (${f.ago((Date.now() - ms) / 1000)})` : "";
  }

  const KINDS = {
    count: (v) => Math.trunc(v).toLocaleString(),
    bytes,
    seconds,
    pct: (v) => `${number(v)} %`,
    timestamp: (v) => localTime(v) + ago(v),
    text: (v) => String(v),
    bool: (v) => (v ? t("yes") : t("no")),
  };

  function text(kind, value) {
    if (value === null || value === undefined) return DASH;
    const format = KINDS[kind];
    return format ? format(value) : String(value);
  }

  function render(sections) {
    for (const section of sections) {
      const panel = document.querySelector(`.summary[data-section="${CSS.escape(section.name)}"]`);
      if (!panel) continue; // a section this page was not drawn with: shown after a reload
      for (const field of section.fields) {
        const dd = panel.querySelector(`dd[data-field="${CSS.escape(field.key)}"]`);
        if (dd) dd.textContent = text(field.kind, field.value);
      }
      const asof = panel.querySelector("[data-asof]");
      if (asof) {
        asof.textContent = section.received_at === null ? t("Not reported yet")
          : t("Reported %(time)s", { time: localTime(section.received_at * 1000) + ago(section.received_at * 1000) })
            + (section.synced ? "" : " · " + t("the appliance's clock is not synchronised"));
      }
    }
  }

  function start() {
    const root = document.getElementById("device");
    const initial = document.getElementById("summaries-initial");
    if (!root || !initial) return;
    const url = `/api/device/${encodeURIComponent(root.dataset.device)}/summaries`;
    let loadedAt = Date.now();

    async function refresh() {
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
        if (!response.ok) return; // the history's status line says when the console is away
        render((await response.json()).sections);
        loadedAt = Date.now();
      } catch (e) {
        // Same: nothing to add to what the page already says.
      }
    }

    render(JSON.parse(initial.textContent));
    setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && Date.now() - loadedAt > REFRESH_MS) refresh();
    });
  }

  // Deferred scripts run in document order, and this one comes before format.js: start once
  // they all have run (DOMContentLoaded fires after the last deferred script).
  if (document.readyState === "complete") start();
  else document.addEventListener("DOMContentLoaded", start);
})();
