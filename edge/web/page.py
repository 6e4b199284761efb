"""The live-view page: every camera's MJPEG stream, current stats, a latency chart and the recent
events with their snapshots (plain JS + canvas).

Self-contained (no CDN, no external script): the device may have no internet. The page asks
``/cameras`` for the cameras (again until there is one, and every 5 s for new ones) and shows a
grid of their streams (``/stream?camera=NAME``); it polls ``/stats`` twice a second (per-camera
FPS and latency from its ``cameras`` entry when the payload has one) and keeps the last 120 points
of end-to-end and invoke p50/p95 to draw; it polls ``/events`` every second and lists them with
their snapshot (``/snapshot/<id>.jpg``), label, score, zones and start/end times. Text from the
server is set with ``textContent`` only (labels and names are never parsed as HTML).
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge live view</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 14px system-ui, sans-serif; margin: 0; background: #111; color: #ddd; }
 main { display: flex; flex-wrap: wrap; gap: 12px; padding: 12px; }
 #cameras { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, max-content)); gap: 8px; }
 #cameras figure { margin: 0; }
 #cameras img { max-width: 100%; border: 1px solid #333; background: #000; display: block; }
 #cameras figcaption { color: #aaa; padding: 2px 0; }
 table { border-collapse: collapse; } td { padding: 2px 8px; border-bottom: 1px solid #222; }
 td:first-child { color: #888; } canvas { background: #1a1a1a; border: 1px solid #333; }
 .legend span { margin-right: 12px; }
 #events { list-style: none; padding: 0; margin: 0; max-height: 600px; overflow-y: auto; }
 #events li { display: flex; gap: 8px; padding: 4px 0; border-bottom: 1px solid #222; }
 #events img { width: 160px; height: auto; background: #000; }
 #events .what { font-weight: bold; }
</style></head>
<body><main>
<section id="cameras"><p id="nocamera">waiting for a camera…</p></section>
<section>
 <table>
  <tr><td>backend</td><td id="backend">-</td></tr>
  <tr><td>inference</td><td><span id="fps">-</span> fps</td></tr>
  <tr><td>frames inferred</td><td id="frames">-</td></tr>
  <tr><td>dropped</td><td id="dropped">-</td></tr>
  <tr><td>end-to-end p50 / p95</td><td id="e2e">-</td></tr>
  <tr><td>invoke p50 / p95</td><td id="invoke">-</td></tr>
  <tr><td>power</td><td id="power">-</td></tr>
  <tr><td>temperature</td><td id="temp">-</td></tr>
  <tr><td>detections</td><td id="detections">-</td></tr>
  <tr><td>updated</td><td id="updates">0</td></tr>
 </table>
 <p class="legend"><span style="color:#4fc3f7">end-to-end p50</span><span style="color:#0277bd">p95</span>
 <span style="color:#ffb74d">invoke p50</span><span style="color:#e65100">p95</span></p>
 <canvas id="chart" width="480" height="200"></canvas>
</section>
<section><h3>recent events</h3><ul id="events"></ul><p id="noevents">none yet</p></section>
</main>
<script>
"use strict";
const history = [];
const MAX = 120;
let updates = 0;
const tiles = new Map();     // camera name -> its caption element
function ms(v) { return v === null || v === undefined ? "-" : v.toFixed(1) + " ms"; }
function text(id, v) { document.getElementById(id).textContent = v; }
function el(tag, cls, content) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (content !== undefined) e.textContent = content;
  return e;
}
function when(t) { return t === null || t === undefined ? "-" : new Date(t * 1000).toLocaleTimeString(); }
async function cameras() {
  try {
    const names = await (await fetch("/cameras", {cache: "no-store"})).json();
    const grid = document.getElementById("cameras");
    for (const name of names) {
      if (tiles.has(name)) continue;
      const fig = el("figure", "camera"), img = el("img", "stream"), cap = el("figcaption", "", name);
      img.src = "/stream?camera=" + encodeURIComponent(name);
      img.alt = "annotated stream of " + name;
      img.dataset.camera = name;
      fig.append(img, cap);
      grid.append(fig);
      tiles.set(name, cap);
    }
    if (tiles.size) document.getElementById("nocamera").hidden = true;
  } catch (err) { /* the next call tries again */ }
  setTimeout(cameras, tiles.size ? 5000 : 500);
}
function draw() {
  const c = document.getElementById("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const keys = [["e2e50", "#4fc3f7"], ["e2e95", "#0277bd"], ["inv50", "#ffb74d"], ["inv95", "#e65100"]];
  let top = 1;
  for (const h of history) for (const [k] of keys) if (h[k] !== null) top = Math.max(top, h[k]);
  g.fillStyle = "#888"; g.fillText(top.toFixed(0) + " ms", 4, 12);
  for (const [k, colour] of keys) {
    g.strokeStyle = colour; g.beginPath(); let started = false;
    history.forEach((h, i) => {
      if (h[k] === null) return;
      const x = i * c.width / (MAX - 1), y = c.height - h[k] / top * (c.height - 16);
      if (started) g.lineTo(x, y); else { g.moveTo(x, y); started = true; }
    });
    g.stroke();
  }
}
function cameraLine(name, c) {
  if (!c || typeof c !== "object") return name;
  const parts = [name];
  const f = c.fps;
  if (f && typeof f === "object") {
    const v = typeof f.inference === "number" ? f.inference : Object.values(f).find(x => typeof x === "number");
    if (typeof v === "number") parts.push(v.toFixed(1) + " fps");
  }
  const l = c.latency_ms, e = l && l.end_to_end;
  if (e && typeof e.p50 === "number") parts.push("e2e p50 " + ms(e.p50));
  const n = c.counts;
  if (n && typeof n.inferred === "number") parts.push(n.inferred + " frames");
  return parts.join(" · ");
}
async function poll() {
  try {
    const s = await (await fetch("/stats", {cache: "no-store"})).json();
    const per = s.cameras && typeof s.cameras === "object" ? s.cameras : {};
    for (const [name, cap] of tiles) cap.textContent = cameraLine(name, per[name]);
    const e = s.latency_ms.end_to_end, v = s.latency_ms.invoke, un = s.unavailable || {};
    text("backend", s.backend || "-");
    text("fps", s.fps.inference.toFixed(1));
    text("frames", s.counts.inferred);
    text("dropped", s.counts.dropped);
    text("e2e", ms(e.p50) + " / " + ms(e.p95));
    text("invoke", ms(v.p50) + " / " + ms(v.p95));
    const p = s.power;
    text("power", p ? p.watts.toFixed(2) + " W (" + p.source + ")" +
         (p.joules_per_inference === null ? "" : ", " + p.joules_per_inference.toFixed(3) + " J/inference")
         : "unavailable: " + (un.power || "-"));
    const t = s.temperatures;
    text("temp", t ? Object.entries(t).map(([k, c]) => k + " " + c.toFixed(1) + " °C").join(", ")
         : "unavailable: " + (un.thermal || "-"));
    text("detections", Object.entries(s.detections).map(([k, n]) => k + " " + n).join(", ") || "none yet");
    history.push({e2e50: e.p50, e2e95: e.p95, inv50: v.p50, inv95: v.p95});
    if (history.length > MAX) history.shift();
    draw();
    text("updates", ++updates);
  } catch (err) {
    text("updates", "stats unreachable: " + err);
  }
}
let shown = "";
async function events() {
  try {
    const list = await (await fetch("/events", {cache: "no-store"})).json();
    const key = JSON.stringify(list);
    if (key !== shown) {
      shown = key;
      const ul = document.getElementById("events");
      ul.replaceChildren();
      for (const ev of list) {
        const li = el("li", "event");
        li.dataset.id = ev.id;
        if (ev.has_snapshot) {
          const img = el("img", "thumb");
          const stamp = ev.snapshot && ev.snapshot.frame_time ? "?t=" + ev.snapshot.frame_time : "";
          img.src = "/snapshot/" + encodeURIComponent(ev.id) + ".jpg" + stamp;
          img.alt = "snapshot of " + ev.label;
          li.append(img);
        }
        const d = el("div");
        d.append(el("div", "what", ev.label + " " + (ev.top_score ?? ev.score ?? 0).toFixed(2)
                                  + (ev.end_time === null ? " (in view)" : "")));
        d.append(el("div", "camera", ev.camera));
        const zones = (ev.entered_zones || []).join(", ");
        d.append(el("div", "zones", zones ? "zones: " + zones : "no zone"));
        d.append(el("div", "times", when(ev.start_time) + " – " + (ev.end_time === null ? "now" : when(ev.end_time))));
        li.append(d);
        ul.append(li);
      }
      document.getElementById("noevents").hidden = list.length > 0;
    }
  } catch (err) { /* the next poll tries again */ }
}
cameras();
poll();
setInterval(poll, 500);
events();
setInterval(events, 1000);
</script>
</body></html>
"""
