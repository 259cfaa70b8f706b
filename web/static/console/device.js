// Device page: the appliance's state and current figures, and SVG charts of its history.
// History comes from /api/device/<id>/history, the figures from /api/fleet; both every 30 s.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const REFRESH_MS = 30000;
  const RANGES = [1, 24, 168];
  const HEIGHT = 150;
  const PAD = { left: 34, right: 10, top: 10, bottom: 22 };

  const root = document.getElementById("device");
  const deviceId = root.dataset.device;
  const statusLine = document.getElementById("history-status");
  const charts = Array.from(document.querySelectorAll("figure.chart"));
  const buttons = Array.from(document.querySelectorAll(".range button"));

  let device = JSON.parse(document.getElementById("device-initial").textContent);
  let hours = Number(new URLSearchParams(location.search).get("hours"));
  if (!RANGES.includes(hours)) {
    const pressed = buttons.find((b) => b.getAttribute("aria-pressed") === "true");
    hours = pressed ? Number(pressed.dataset.hours) : 24;
  }
  let data = null; // the last history answer
  let request = 0; // answers to older requests (a range clicked meanwhile) are dropped
  let loadedAt = 0;

  const fmt = window.ConsoleFormat.metric;
  const ago = window.ConsoleFormat.ago;
  const { t, short } = window.ConsoleFormat;


  function localTime(seconds) {
    return window.ConsoleFormat.dateTime(seconds);
  }

  function text(id, value) {
    const el = document.getElementById(id);
    if (el) el.textContent = value;
  }

  // --- state and figures -------------------------------------------------------------------

  function renderDevice(d, nowMs) {
    root.classList.remove("online", "offline", "unknown");
    root.classList.add(d.state);
    text("dev-name", d.name);
    text("dev-state", t(d.state));
    const heard = d.last_seen ? t("last heard %(ago)s", { ago: ago(nowMs / 1000 - d.last_seen) }) : t("never heard");
    text("dev-reason", d.state === "online" ? "" : d.reason_text ? `${t(d.reason_text)} · ${heard}` : heard);
    text("dev-agent", d.agent_version || "–");
    if ("first_seen" in d) text("dev-first-seen", localTime(d.first_seen));
    text("dev-last-seen", d.last_seen ? `${localTime(d.last_seen)} (${ago(nowMs / 1000 - d.last_seen)})` : t("never"));
    if ("interval" in d) {
      text("dev-interval", !d.interval ? t("not announced")
        : d.interval < 120 ? t("%(num)s s", { num: short(d.interval, 1) }) : t("%(num)s min", { num: short(d.interval / 60, 1) }));
    }
    for (const dd of document.querySelectorAll("#figures dd[data-metric]")) {
      const v = d.health[dd.dataset.metric];
      dd.textContent = v === null || v === undefined ? "–" : fmt[dd.dataset.metric](v);
      dd.title = d.state !== "online" && v !== null && v !== undefined ? t("last reported value") : "";
    }
    text("dev-sample-at", d.health.ts ? localTime(d.health.ts / 1000) : t("none yet"));
  }

  async function refreshDevice() {
    try {
      const response = await fetch("/api/fleet", { headers: { Accept: "application/json" }, cache: "no-store" });
      if (!response.ok) return;
      const snap = await response.json();
      const d = snap.devices.find((x) => x.id === deviceId);
      if (d) {
        device = { ...device, ...d };
        renderDevice(device, snap.generated_at * 1000);
      }
    } catch (e) {
      // The history's status line already says when the console cannot be reached.
    }
  }

  // --- charts ------------------------------------------------------------------------------

  function svgEl(name, attrs) {
    const el = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  }

  function span(ms) {
    if (ms >= 2 * 86400000) return t("%(num)s d", { num: short(ms / 86400000, 1) });
    if (ms >= 3600000) return t("%(num)s h", { num: Math.round(ms / 3600000) });
    if (ms >= 120000) return t("%(num)s min", { num: Math.round(ms / 60000) });
    return t("%(num)s s", { num: Math.round(ms / 1000) });
  }

  function number(v) {
    return short(v, 1);
  }

  // Temperature: the data's range widened a little, on multiples of 5 °C with a whole middle.
  function autoRange(values) {
    if (values.length === 0) return [20, 80];
    const pad = Math.max(2, (Math.max(...values) - Math.min(...values)) * 0.15);
    const lo = Math.floor((Math.min(...values) - pad) / 5) * 5;
    let hi = Math.ceil((Math.max(...values) + pad) / 5) * 5;
    if ((hi - lo) % 10 !== 0) hi += 5;
    return [lo, hi];
  }

  // Consecutive points of one metric, split where no data came for a while: more than 3 empty
  // buckets, and more than 3 report intervals (the console's own "silent" rule), so that a
  // device reporting every 60 s is one line on the 1 h range (15 s buckets), not a row of dots.
  function segments(points, col, bucketMs) {
    const gapMs = Math.max(4 * bucketMs, 3 * (device.interval || 0) * 1000);
    const out = [];
    let current = [], previous = null;
    for (const p of points) {
      if (p[col] === null || p[col] === undefined) continue;
      if (previous !== null && p[0] - previous > gapMs) {
        out.push(current);
        current = [];
      }
      current.push(p);
      previous = p[0];
    }
    if (current.length) out.push(current);
    return out;
  }

  function draw(figure) {
    const plot = figure.querySelector(".plot");
    const stats = figure.querySelector(".stats");
    const col = Number(figure.dataset.col);
    const pct = figure.dataset.scale === "pct";
    const withUnit = (v) => (pct ? t("%(num)s %%", { num: number(v) }) : t("%(num)s °C", { num: number(v) }));
    const w = Math.max(200, Math.round(plot.clientWidth || 600));
    figure.dataset.width = String(w);
    const x0 = PAD.left, x1 = w - PAD.right, y0 = HEIGHT - PAD.bottom, y1 = PAD.top;
    const values = data.points.map((p) => p[col]).filter((v) => v !== null && v !== undefined);
    const [lo, hi] = pct ? [0, 100] : autoRange(values);
    const t0 = data.from, t1 = data.to;
    const x = (t) => Math.min(x1, Math.max(x0, x0 + ((t - t0) / (t1 - t0)) * (x1 - x0)));
    const y = (v) => y0 - ((v - lo) / (hi - lo)) * (y0 - y1);

    const svg = svgEl("svg", { viewBox: `0 0 ${w} ${HEIGHT}`, width: w, height: HEIGHT, role: "img" });
    for (const v of [lo, (lo + hi) / 2, hi]) {
      svg.append(svgEl("line", { x1: x0, x2: x1, y1: y(v).toFixed(1), y2: y(v).toFixed(1), class: "grid" }));
      const label = svgEl("text", { x: x0 - 5, y: (y(v) + 4).toFixed(1), "text-anchor": "end", class: "axis" });
      label.textContent = number(v);
      svg.append(label);
    }
    // The range asked for; the window of whole buckets can start up to one bucket later.
    const rangeMs = hours * 3600000;
    const ticks = [[t1 - rangeMs, "start", t("%(span)s ago", { span: span(rangeMs) })],
      [t1 - rangeMs / 2, "middle", t("%(span)s ago", { span: span(rangeMs / 2) })], [t1, "end", t("now")]];
    for (const [t, anchor, words] of ticks) {
      const label = svgEl("text", { x: x(t).toFixed(1), y: HEIGHT - 6, "text-anchor": anchor, class: "axis" });
      label.textContent = words;
      svg.append(label);
    }
    for (const seg of segments(data.points, col, data.bucket_ms)) {
      if (seg.length === 1) {
        svg.append(svgEl("circle", { cx: x(seg[0][0]).toFixed(1), cy: y(seg[0][col]).toFixed(1), r: 2.5, class: "series" }));
      } else {
        const pts = seg.map((p) => `${x(p[0]).toFixed(1)},${y(p[col]).toFixed(1)}`).join(" ");
        svg.append(svgEl("polyline", { points: pts, class: "series" }));
      }
    }
    const title = svgEl("title", {});
    const label = figure.querySelector(".label").textContent;
    if (values.length === 0) {
      stats.textContent = t("no data in this range");
      title.textContent = t("%(label)s: no data in the last %(span)s", { label, span: span(rangeMs) });
    } else {
      const latest = values[values.length - 1];
      const min = Math.min(...values), max = Math.max(...values);
      stats.textContent = t("latest %(latest)s · min %(min)s · max %(max)s",
        { latest: withUnit(latest), min: number(min), max: number(max) });
      title.textContent = t("%(label)s over the last %(span)s: latest %(latest)s, min %(min)s, max %(max)s",
        { label, span: span(rangeMs), latest: withUnit(latest), min: number(min), max: number(max) });
    }
    svg.prepend(title);
    plot.replaceChildren(svg);
  }

  function drawAll() {
    if (data) charts.forEach(draw);
  }

  async function loadHistory() {
    const mine = ++request;
    const url = `/api/device/${encodeURIComponent(deviceId)}/history?hours=${hours}`;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (mine !== request) return;
      if (response.status === 401) {
        statusLine.textContent = t("Your session has ended: reload the page to sign in again.");
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const answer = await response.json();
      if (mine !== request) return;
      data = answer;
      loadedAt = Date.now();
      statusLine.textContent = t("Last %(span)s, averaged per %(bucket)s · updated %(time)s",
        { span: span(hours * 3600000), bucket: span(data.bucket_ms), time: window.ConsoleFormat.time(new Date()) })
        + (data.unsynced ? " · " + t("%(num)s samples with an untrusted time are not charted", { num: data.unsynced }) : "");
      drawAll();
    } catch (e) {
      if (mine === request) statusLine.textContent = t("Could not load the history; trying again in 30 s.");
    }
  }

  function setRange(h) {
    hours = h;
    for (const b of buttons) b.setAttribute("aria-pressed", String(Number(b.dataset.hours) === h));
    // Remember the range in the address (no reload), so a reload or a shared link keeps it.
    history.replaceState(null, "", h === 24 ? location.pathname : `${location.pathname}?hours=${h}`);
    statusLine.textContent = t("Loading…");
    loadHistory();
  }

  function refresh() {
    loadHistory();
    refreshDevice();
  }

  for (const b of buttons) b.addEventListener("click", () => setRange(Number(b.dataset.hours)));
  for (const b of buttons) b.setAttribute("aria-pressed", String(Number(b.dataset.hours) === hours));

  // Redraw at the new width (text stays its real size: the SVG is drawn in CSS pixels).
  let pending = false;
  new ResizeObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      if (charts.some((f) => f.dataset.width !== String(Math.max(200, Math.round(f.querySelector(".plot").clientWidth || 600))))) drawAll();
    });
  }).observe(document.querySelector(".charts"));

  setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && Date.now() - loadedAt > REFRESH_MS) refresh();
  });

  renderDevice(device, Date.now());
  loadHistory();
})();
