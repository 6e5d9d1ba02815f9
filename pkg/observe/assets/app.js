// ringtrain dashboard: keeps the page live from /api/events (server-sent
// events) and draws the curves on canvases. No libraries, no network
// beyond this server.
(function () {
  "use strict";
  const token = new URLSearchParams(location.search).get("token");
  const q = (p) => (token ? p + (p.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : p);
  const $ = (id) => document.getElementById(id);
  const colors = ["#2563eb", "#dc2626", "#059669", "#7c3aed"];
  let steps = []; // every point received, in order
  let curve = []; // the points on the curves: rolled-back steps removed
  let state = null;

  const fmt = (v, d) => (v === undefined || v === null || isNaN(v) ? "-" : Number(v).toFixed(d));
  const pct = (v) => fmt(100 * v, 1) + "%";
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  // A GPU worker's device memory held by its backend, of the device's total.
  const devMem = (w) => (w.device_total_gib > 0 ? ` <small class="devmem">${fmt(w.device_mem_gib, 1)} / ${fmt(w.device_total_gib, 0)} GiB</small>` : "");
  const ago = (t) => {
    const ms = Date.now() - Date.parse(t);
    if (!t || t.startsWith("0001") || isNaN(ms)) return "-";
    return (ms / 1000).toFixed(1) + " s ago";
  };
  const dur = (s) => {
    if (s < 0) return "-";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + "h" : "") + (h || m ? m + "m" : "") + r + "s";
  };
  const size = (n) => (n >= 1 << 20 ? (n / 1e6).toFixed(1) + " MB" : n >= 1024 ? (n / 1e3).toFixed(1) + " kB" : n + " B");

  // chart draws series [{name, color, pts: [[x, y], ...]}] into canvas c.
  function chart(c, series, opt) {
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (c.width !== w * dpr || c.height !== h * dpr) { c.width = w * dpr; c.height = h * dpr; }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    let n = 0, x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const s of series) for (const [x, y] of s.pts) {
      if (!isFinite(y)) continue;
      n++; x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    c.dataset.points = String(n);
    if (!n) { g.fillStyle = "#9ca3af"; g.fillText("waiting for data", 10, 20); return; }
    if (opt && opt.zero) y0 = Math.min(0, y0);
    // A few far outliers (the first epoch's validation loss) would flatten
    // the rest: the range stops at cap x the reference series' maximum and
    // points above it are drawn on the top edge.
    if (opt && opt.cap) {
      let m = -Infinity;
      for (const [, y] of series[opt.capRef || 0].pts) if (isFinite(y)) m = Math.max(m, y);
      if (isFinite(m) && m > 0) y1 = Math.min(y1, opt.cap * m);
    }
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y1 = y0 + Math.abs(y0 || 1) * 0.1; y0 = y0 - Math.abs(y0 || 1) * 0.1; }
    const L = 48, R = 8, T = 8, B = 20;
    const X = (x) => L + ((x - x0) / (x1 - x0)) * (w - L - R);
    const Y = (y) => h - B - ((Math.min(y, y1) - y0) / (y1 - y0)) * (h - T - B);
    g.strokeStyle = "#e5e7eb"; g.fillStyle = "#6b7280"; g.font = "11px system-ui, sans-serif"; g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = y0 + ((y1 - y0) * i) / 4, py = Y(y);
      g.beginPath(); g.moveTo(L, py); g.lineTo(w - R, py); g.stroke();
      g.fillText(Math.abs(y) >= 1000 ? y.toFixed(0) : Math.abs(y) >= 1 ? y.toFixed(2) : y.toPrecision(2), 2, py + 4);
    }
    g.fillText(String(Math.round(x0)), L, h - 5);
    const xr = String(Math.round(x1)); g.fillText(xr, w - R - g.measureText(xr).width, h - 5);
    series.forEach((s, i) => {
      g.strokeStyle = s.color || colors[i % colors.length]; g.fillStyle = g.strokeStyle; g.lineWidth = s.dots ? 1 : 1.5;
      g.beginPath();
      let first = true;
      for (const [x, y] of s.pts) {
        if (!isFinite(y)) continue;
        if (first) { g.moveTo(X(x), Y(y)); first = false; } else g.lineTo(X(x), Y(y));
      }
      g.stroke();
      if (s.dots) for (const [x, y] of s.pts) { g.beginPath(); g.arc(X(x), Y(y), 3, 0, 7); g.fill(); }
      g.fillText(s.name, L + 6 + i * 90, T + 10);
    });
  }

  // smooth returns an exponential moving average of pts (the raw per-step
  // curve is noisy).
  function smooth(pts, a) {
    let m = null;
    return pts.map(([x, y]) => { m = m === null ? y : a * m + (1 - a) * y; return [x, m]; });
  }

  function drawCharts() {
    const ep = (state && state.epochs) || [];
    const S = (f) => curve.map((p) => [p.step, f(p)]);
    const E = (f) => ep.map((e) => [e.steps, f(e)]);
    chart($("c-loss"), [
      { name: "train (step)", color: "#93c5fd", pts: S((p) => p.loss) },
      { name: "smoothed", color: "#2563eb", pts: smooth(S((p) => p.loss), 0.9) },
      { name: "validation", color: "#dc2626", pts: E((e) => e.val_loss), dots: true },
    ], { cap: 1.5 });
    chart($("c-acc"), [
      { name: "train (step)", color: "#93c5fd", pts: S((p) => 100 * p.accuracy) },
      { name: "smoothed", color: "#2563eb", pts: smooth(S((p) => 100 * p.accuracy), 0.9) },
      { name: "validation", color: "#dc2626", pts: E((e) => 100 * e.val_acc), dots: true },
    ], { zero: true });
    chart($("c-lr"), [{ name: "lr", color: "#7c3aed", pts: S((p) => p.lr) }], { zero: true });
    chart($("c-ips"), [{ name: "images/s", color: "#059669", pts: S((p) => p.images_per_sec) }], { zero: true });
    const sc = $("steps-count");
    sc.dataset.count = String(curve.length);
    sc.textContent = curve.length + " steps";
  }

  function render(s) {
    const j = s.job;
    document.title = "ringtrain · " + j.name;
    $("job-name").textContent = j.name;
    const st = $("status"); st.textContent = j.status; st.className = "badge s-" + j.status;
    $("job-epoch").textContent = j.epoch + 1 + " / " + j.epochs;
    $("job-step").textContent = j.step + " / " + j.total_steps;
    $("job-committed").textContent = j.committed;
    $("job-ips").textContent = fmt(j.images_per_sec, 0);
    $("job-eta").textContent = dur(j.eta_seconds);
    $("job-gen").textContent = "generation " + j.generation;
    $("job-replica").textContent = j.replica + (j.is_leader ? " (leader)" : " (leader: " + (j.leader || "?") + ")");
    $("files").innerHTML = (j.files || []).map((f) => `<li><a href="${esc(q(f.url))}">${esc(f.name)}</a> <small>${size(f.size)}</small></li>`).join("") || "<li>none yet</li>";
    if (j.spec) $("spec").textContent = JSON.stringify(j.spec, null, 2);
    $("worker-rows").innerHTML = (s.workers || []).map((w) =>
      `<tr data-worker="${esc(w.id)}" class="row-${esc(w.state)}"><td>${esc(w.id)}</td><td>${esc(w.host)}</td><td>${esc(w.device)}${devMem(w)}</td><td>${w.rank}</td>` +
      `<td class="state st-${esc(w.state)}">${esc(w.state)}</td><td>${fmt(w.images_per_sec, 0)}</td><td>${fmt(w.step_ms, 1)}</td>` +
      `<td>${fmt(w.data_ms, 1)}</td><td>${fmt(w.compute_ms, 1)}</td><td>${fmt(w.exposed_ms, 1)}</td><td>${fmt(w.optimizer_ms, 1)}</td>` +
      `<td>${ago(w.last_seen)}</td></tr>`).join("");
    const r = s.ring || {};
    $("ring-order").textContent = (r.order || []).join(" → ") || "no ring";
    $("ring-links").innerHTML = (r.links || []).map((l) => `<li>${esc(l.from)} → ${esc(l.to)}: ${esc(l.transport)}</li>`).join("");
    $("ring-busbw").textContent = fmt(r.busbw_gbs, 2) + " GB/s";
    $("ring-hidden").textContent = pct(r.hidden || 0);
    $("epochs").tBodies[0].innerHTML = (s.epochs || []).map((e) =>
      `<tr><td>${e.epoch}</td><td>${e.steps}</td><td>${fmt(e.train_loss, 4)}</td><td>${pct(e.train_acc)}</td>` +
      `<td>${fmt(e.val_loss, 4)}</td><td>${pct(e.val_acc)}</td><td>${fmt(e.images_per_sec, 0)}</td></tr>`).join("");
    $("events").innerHTML = (s.events || []).slice().reverse().map((e) =>
      `<li class="ev-${esc(e.kind)}"><time>${new Date(e.time).toLocaleTimeString()}</time> <b>${esc(e.kind)}</b> ${esc(e.text)}</li>`).join("");
  }

  let pending = false;
  let base = 0; // absolute index of steps[0]
  function update(s) {
    const got = s.steps || [];
    if (s.steps_from < base || s.steps_from > base + steps.length) {
      base = s.steps_from; // the server thinned its points, or a new process
      steps = got;
    } else {
      steps = steps.slice(0, s.steps_from - base).concat(got);
    }
    curve = [];
    for (const p of steps) {
      // A step trained again after a rollback replaces the abandoned ones
      // from there on (the last report of a step wins).
      while (curve.length && curve[curve.length - 1].step >= p.step) curve.pop();
      curve.push(p);
    }
    state = s;
    render(s);
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; drawCharts(); }); }
  }

  function connect() {
    const es = new EventSource(q("api/events?from=0"));
    const live = $("live");
    es.addEventListener("state", (ev) => { live.textContent = "live"; live.className = "live on"; update(JSON.parse(ev.data)); });
    es.onerror = () => { live.textContent = "reconnecting"; live.className = "live"; };
  }
  window.addEventListener("resize", drawCharts);
  // Ticking "last heartbeat" ages between updates.
  setInterval(() => { if (state) render(state); }, 1000);
  connect();
})();
