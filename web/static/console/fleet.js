// Live fleet table: renders the snapshot from /events (server-sent events) without a reload.
"use strict";
(function () {
  const tbody = document.querySelector("#fleet tbody");
  const live = document.getElementById("live");
  const NS = "http://www.w3.org/2000/svg";

  const fmt = window.ConsoleFormat.metric;
  const ago = window.ConsoleFormat.ago;
  const { t, nt } = window.ConsoleFormat;

  // The x axis is always the last hour (a sample's minute bucket), so a new appliance's first
  // minutes sit at the right edge instead of stretching across the chart.
  function sparkline(points, nowMs) {
    const w = 160, h = 36, svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("class", "spark");
    svg.setAttribute("role", "img");
    if (points.length === 0) return svg;
    const span = 3600 * 1000, t0 = nowMs - span;
    const x = (t) => Math.min(w - 2, Math.max(1, ((t - t0) / span) * (w - 2) + 1));
    const y = (v) => h - 2 - (v / 100) * (h - 4);
    [1, 2].forEach((col) => {
      const valid = points.filter((p) => p[col] !== null);
      if (valid.length === 0) return;
      const cls = col === 1 ? "cpu" : "mem";
      if (valid.length === 1) {
        const dot = document.createElementNS(NS, "circle");
        dot.setAttribute("cx", x(valid[0][0]).toFixed(1));
        dot.setAttribute("cy", y(valid[0][col]).toFixed(1));
        dot.setAttribute("r", "1.8");
        dot.setAttribute("class", cls);
        svg.appendChild(dot);
        return;
      }
      const line = document.createElementNS(NS, "polyline");
      line.setAttribute("points", valid.map((p) => `${x(p[0]).toFixed(1)},${y(p[col]).toFixed(1)}`).join(" "));
      line.setAttribute("class", cls);
      svg.appendChild(line);
    });
    const title = document.createElementNS(NS, "title");
    const last = points[points.length - 1];
    title.textContent = t("CPU %(cpu)s %%, memory %(mem)s %% (last hour, per minute)", { cpu: last[1] ?? "–", mem: last[2] ?? "–" });
    svg.appendChild(title);
    return svg;
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  function row(d, nowMs) {
    const tr = document.createElement("tr");
    tr.dataset.device = d.id;
    tr.className = d.state;
    const name = cell("");
    // The name opens the device page; text only, the id escaped for the URL.
    const link = document.createElement("a");
    link.className = "name";
    link.href = "/device/" + encodeURIComponent(d.id);
    link.textContent = d.name;
    const small = document.createElement("small");
    small.textContent = d.id;
    name.append(link, document.createElement("br"), small);
    const state = cell("", "state");
    const dot = document.createElement("span");
    dot.className = "dot";
    state.append(dot, document.createTextNode(t(d.state)));
    if (d.state !== "online") {
      // When the console last heard from it: what an admin needs to judge an outage.
      const why = document.createElement("small");
      const heard = d.last_seen ? t("last heard %(ago)s", { ago: ago(nowMs / 1000 - d.last_seen) }) : t("never heard");
      why.textContent = d.reason_text ? `${t(d.reason_text)} · ${heard}` : heard;
      state.append(document.createElement("br"), why);
    }
    tr.append(name, state);
    for (const key of ["cpu_pct", "mem_pct", "disk_pct", "temp_c", "uptime_s"]) {
      const v = d.health[key];
      const td = cell(v === null || v === undefined ? "–" : fmt[key](v), "m");
      td.dataset.metric = key;
      if (d.state !== "online" && v !== null && v !== undefined) td.title = t("last reported value");
      tr.append(td);
    }
    const chart = cell("", "chart");
    chart.append(sparkline(d.history, nowMs));
    tr.append(chart);
    return tr;
  }

  function render(snap) {
    document.getElementById("count-online").textContent = snap.counts.online;
    document.getElementById("count-total").textContent = snap.counts.total;
    const rejected = document.getElementById("rejected");
    rejected.hidden = snap.ingest.rejected_messages === 0;
    rejected.textContent = nt("%(num)s malformed message rejected (see the ingest log)",
      "%(num)s malformed messages rejected (see the ingest log)", snap.ingest.rejected_messages);
    const warn = document.getElementById("ingest-warning");
    warn.hidden = snap.ingest.broker_connected;
    warn.textContent = !snap.ingest.alive
      ? t("The ingest worker is not running: what you see may be out of date.")
      : t("The console cannot reach the broker: appliances are shown offline until it is back.");
    tbody.replaceChildren(...snap.devices.map((d) => row(d, snap.generated_at * 1000)));
    if (snap.devices.length === 0) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = cell(t("No appliance has reported yet. Provision one and start its agent."));
      td.colSpan = 8;
      tr.append(td);
      tbody.append(tr);
    }
  }

  // The page's copy of the fleet: replaced by a "fleet" event, merged with each "patch".
  let state = JSON.parse(document.getElementById("initial").textContent);
  let receivedAt = Date.now();
  const byId = new Map();

  function show() {
    // Times ("last heard 3 min ago") move on between events: age the snapshot by local time.
    const elapsed = (Date.now() - receivedAt) / 1000;
    render({ ...state, generated_at: state.generated_at + elapsed });
  }

  function replace(snap) {
    state = snap;
    byId.clear();
    snap.devices.forEach((d) => byId.set(d.id, d));
    receivedAt = Date.now();
    show();
  }

  function patch(p) {
    p.devices.forEach((d) => byId.set(d.id, d));
    p.removed.forEach((id) => byId.delete(id));
    const order = p.order || state.devices.map((d) => d.id);
    state = { generated_at: p.generated_at, ingest: p.ingest, counts: p.counts,
              devices: order.filter((id) => byId.has(id)).map((id) => byId.get(id)) };
    receivedAt = Date.now();
    show();
  }

  function connected() {
    live.textContent = t("live");
    live.className = "live on";
  }

  replace(state);
  setInterval(show, 30000);
  const source = new EventSource("/events");
  source.addEventListener("fleet", (e) => { connected(); replace(JSON.parse(e.data)); });
  source.addEventListener("patch", (e) => { connected(); patch(JSON.parse(e.data)); });
  source.onerror = () => { live.textContent = t("reconnecting…"); live.className = "live"; };
})();
