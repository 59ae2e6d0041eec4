"""A live 3D view of the labelled map in a web browser, for users without RViz.

A small HTTP server (standard library only) serves one page of our own: plain WebGL 2 (no
library, no font or CDN request, nothing leaves the machine) that draws the labelled points,
orbits with the mouse (drag to turn, wheel to zoom) and polls for new maps. It binds to
127.0.0.1 unless told otherwise. Chosen over rerun-sdk's bundled viewer, whose page calls
out (telemetry, fonts, GitHub), whose servers bind 0.0.0.0, and whose wheel is 163 MiB.

Routes: ``/`` the page; ``/map.bin`` the latest map (little-endian: uint32 point count, then
float32 xyz per point, then uint8 rgb per point; metres, map frame, z up);
``/status.json`` the map version and the instance list.
"""

from __future__ import annotations

import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .labels import colour_by_instance, dimmed, instance_colours
from .segmenter import MapSegmentation

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>occuseg live map</title>
<style>
 html, body { margin: 0; height: 100%; background: #181818; color: #ddd;
              font: 13px monospace; overflow: hidden; }
 canvas { width: 100%; height: 100%; display: block; }
 #panel { position: absolute; top: 8px; left: 8px; background: rgba(0,0,0,0.55);
          padding: 6px 10px; max-height: 90%; overflow-y: auto; }
 .sw { display: inline-block; width: 10px; height: 10px; margin-right: 6px; }
</style></head>
<body><canvas id="view"></canvas><div id="panel">waiting for the map...</div>
<script>
"use strict";
const canvas = document.getElementById("view");
const gl = canvas.getContext("webgl2", {antialias: false});
const panel = document.getElementById("panel");
const vs = `#version 300 es
in vec3 position; in vec3 colour; uniform mat4 mvp; uniform float size; out vec3 c;
void main() { gl_Position = mvp * vec4(position, 1.0);
  gl_PointSize = size / max(gl_Position.w, 0.1); c = colour; }`;
const fs = `#version 300 es
precision mediump float; in vec3 c; out vec4 o; void main() { o = vec4(c, 1.0); }`;
function shader(type, text) {
  const s = gl.createShader(type); gl.shaderSource(s, text); gl.compileShader(s); return s; }
const program = gl.createProgram();
gl.attachShader(program, shader(gl.VERTEX_SHADER, vs));
gl.attachShader(program, shader(gl.FRAGMENT_SHADER, fs));
gl.linkProgram(program); gl.useProgram(program);
const positions = gl.createBuffer(), colours = gl.createBuffer();
const vao = gl.createVertexArray(); gl.bindVertexArray(vao);
for (const [name, buffer, type, norm] of [["position", positions, gl.FLOAT, false],
                                          ["colour", colours, gl.UNSIGNED_BYTE, true]]) {
  const loc = gl.getAttribLocation(program, name);
  gl.bindBuffer(gl.ARRAY_BUFFER, buffer); gl.enableVertexAttribArray(loc);
  gl.vertexAttribPointer(loc, 3, type, norm, 0, 0);
}
let count = 0, centre = [0, 0, 0], radius = 5, yaw = 0.8, pitch = 0.6, version = -1;
let dragging = false, lastX = 0, lastY = 0, touched = false;
canvas.onmousedown = e => { dragging = true; touched = true; lastX = e.clientX; lastY = e.clientY; };
window.onmouseup = () => { dragging = false; };
window.onmousemove = e => { if (!dragging) return;
  yaw -= (e.clientX - lastX) * 0.01; pitch = Math.min(1.5, Math.max(-0.2,
  pitch + (e.clientY - lastY) * 0.01)); lastX = e.clientX; lastY = e.clientY; };
canvas.onwheel = e => { radius *= Math.exp(e.deltaY * 0.001); e.preventDefault(); };
function matrix() {
  const w = canvas.width, h = canvas.height, f = 1 / Math.tan(0.5), n = 0.05, far = 100;
  const eye = [centre[0] + radius * Math.cos(pitch) * Math.cos(yaw),
               centre[1] + radius * Math.cos(pitch) * Math.sin(yaw),
               centre[2] + radius * Math.sin(pitch)];
  const z = norm(sub(eye, centre)), x = norm(cross([0, 0, 1], z)), y = cross(z, x);
  const view = [x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0,
                -dot(x, eye), -dot(y, eye), -dot(z, eye), 1];
  const proj = [f * h / w, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + n) / (n - far), -1,
                0, 0, 2 * far * n / (n - far), 0];
  return mul(proj, view);
}
function sub(a, b) { return [a[0] - b[0], a[1] - b[1], a[2] - b[2]]; }
function dot(a, b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
function cross(a, b) { return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                               a[0] * b[1] - a[1] * b[0]]; }
function norm(a) { const l = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / l, a[1] / l, a[2] / l]; }
function mul(a, b) { const o = new Array(16).fill(0);
  for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) for (let k = 0; k < 4; k++)
    o[c * 4 + r] += a[k * 4 + r] * b[c * 4 + k]; return o; }
function draw() {
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  gl.viewport(0, 0, w, h); gl.clearColor(0.094, 0.094, 0.094, 1);
  gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT); gl.enable(gl.DEPTH_TEST);
  if (!touched) yaw += 0.002;
  gl.uniformMatrix4fv(gl.getUniformLocation(program, "mvp"), false, matrix());
  gl.uniform1f(gl.getUniformLocation(program, "size"), 0.04 * h);
  if (count) gl.drawArrays(gl.POINTS, 0, count);
  requestAnimationFrame(draw);
}
async function poll() {
  try {
    const status = await (await fetch("status.json", {cache: "no-store"})).json();
    if (status.version !== version) {
      const data = await (await fetch("map.bin", {cache: "no-store"})).arrayBuffer();
      const n = new DataView(data).getUint32(0, true);
      const xyz = new Float32Array(data, 4, 3 * n), rgb = new Uint8Array(data, 4 + 12 * n, 3 * n);
      gl.bindBuffer(gl.ARRAY_BUFFER, positions); gl.bufferData(gl.ARRAY_BUFFER, xyz, gl.STATIC_DRAW);
      gl.bindBuffer(gl.ARRAY_BUFFER, colours); gl.bufferData(gl.ARRAY_BUFFER, rgb, gl.STATIC_DRAW);
      count = n; version = status.version;
      if (n && !touched) { centre = status.centre; radius = status.radius; }
      panel.innerHTML = `${n} points, ${status.instances.length} instances<br>` +
        status.instances.map(i => `<span class="sw" style="background:rgb(${i.colour})"></span>` +
          `${i.class} #${i.id} ${i.score.toFixed(2)}`).join("<br>");
    }
  } catch (e) { panel.textContent = "waiting for the map..."; }
  setTimeout(poll, 1000);
}
poll(); requestAnimationFrame(draw);
</script></body></html>
"""


class MapViewer:
    """Serves the latest labelled map to a browser; see the module docstring.

    Args:
        host: address to bind (127.0.0.1: this machine only).
        port: TCP port; 0 picks a free one (see :attr:`url`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765) -> None:
        self._lock = threading.Lock()
        self._payload = struct.pack("<I", 0)
        self._status = json.dumps({"version": 0, "instances": [], "centre": [0, 0, 0],
                                   "radius": 5.0}).encode()
        self._version = 0
        viewer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path.split("?")[0]
                if path == "/":
                    body, kind = _PAGE.encode(), "text/html; charset=utf-8"
                elif path == "/map.bin":
                    body, kind = viewer.payload, "application/octet-stream"
                elif path == "/status.json":
                    body, kind = viewer.status, "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Security-Policy",
                                 "default-src 'self'; script-src 'unsafe-inline'; "
                                 "style-src 'unsafe-inline'")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                """Quiet: the live status line owns the terminal."""

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def payload(self) -> bytes:
        with self._lock:
            return self._payload

    @property
    def status(self) -> bytes:
        with self._lock:
            return self._status

    def update(self, seg: MapSegmentation) -> None:
        """Publish a new labelled map: instance colours, the rest in dimmed own colour."""
        colour = colour_by_instance(seg.instance, dimmed(seg.rgb))
        xyz = np.ascontiguousarray(seg.xyz, "<f4")
        payload = struct.pack("<I", xyz.shape[0]) + xyz.tobytes() + colour.tobytes()
        lo = xyz.min(axis=0) if len(xyz) else np.zeros(3)
        hi = xyz.max(axis=0) if len(xyz) else np.zeros(3)
        table = seg.instances
        palette = instance_colours(table.ids)
        records = [{**row, "colour": ",".join(str(int(c)) for c in palette[k])}
                   for k, row in enumerate(table.to_json())]
        with self._lock:
            self._version += 1
            self._payload = payload
            self._status = json.dumps({
                "version": self._version, "instances": records,
                "centre": [float(v) for v in (lo + hi) / 2.0],
                "radius": float(max(np.linalg.norm(hi - lo), 1.0)) * 0.9}).encode()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
