"""The live-view page: the MJPEG stream, current stats, and a latency chart (plain JS + canvas).

Self-contained (no CDN, no external script): the device may have no internet. The page polls
``/stats`` twice a second and keeps the last 120 points of end-to-end and invoke p50/p95 to draw.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge live view</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 14px system-ui, sans-serif; margin: 0; background: #111; color: #ddd; }
 main { display: flex; flex-wrap: wrap; gap: 12px; padding: 12px; }
 #stream { max-width: 100%; border: 1px solid #333; background: #000; }
 table { border-collapse: collapse; } td { padding: 2px 8px; border-bottom: 1px solid #222; }
 td:first-child { color: #888; } canvas { background: #1a1a1a; border: 1px solid #333; }
 .legend span { margin-right: 12px; }
</style></head>
<body><main>
<section><img id="stream" src="/stream.mjpg" alt="annotated stream"></section>
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
</main>
<script>
"use strict";
const history = [];
const MAX = 120;
let updates = 0;
function ms(v) { return v === null || v === undefined ? "-" : v.toFixed(1) + " ms"; }
function text(id, v) { document.getElementById(id).textContent = v; }
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
async function poll() {
  try {
    const s = await (await fetch("/stats", {cache: "no-store"})).json();
    const e = s.latency_ms.end_to_end, v = s.latency_ms.invoke;
    text("backend", s.backend || "-");
    text("fps", s.fps.inference.toFixed(1));
    text("frames", s.counts.inferred);
    text("dropped", s.counts.dropped);
    text("e2e", ms(e.p50) + " / " + ms(e.p95));
    text("invoke", ms(v.p50) + " / " + ms(v.p95));
    const p = s.power;
    text("power", p ? p.watts.toFixed(2) + " W (" + p.source + ")" +
         (p.joules_per_inference === null ? "" : ", " + p.joules_per_inference.toFixed(3) + " J/inference")
         : "unavailable: " + (s.unavailable.power || "-"));
    const t = s.temperatures;
    text("temp", t ? Object.entries(t).map(([k, c]) => k + " " + c.toFixed(1) + " °C").join(", ")
         : "unavailable: " + (s.unavailable.thermal || "-"));
    text("detections", Object.entries(s.detections).map(([k, n]) => k + " " + n).join(", ") || "none yet");
    history.push({e2e50: e.p50, e2e95: e.p95, inv50: v.p50, inv95: v.p95});
    if (history.length > MAX) history.shift();
    draw();
    text("updates", ++updates);
  } catch (err) {
    text("updates", "stats unreachable: " + err);
  }
}
poll();
setInterval(poll, 500);
</script>
</body></html>
"""
