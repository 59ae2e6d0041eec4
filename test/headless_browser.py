"""Screenshots of a web page with headless Chromium over the DevTools protocol (a pipe).

``--screenshot`` fires before a WebGL page has drawn, so the page is opened, given real
seconds, and captured with ``Page.captureScreenshot``. The protocol runs over
``--remote-debugging-pipe`` (NUL-terminated JSON on file descriptors 3 and 4), so no
websocket library is needed. WebGL 2 comes from SwiftShader (software).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time


def chromium() -> str | None:
    """Path of a Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.write_fd, self.read_fd = write_fd, read_fd
        self.buffer = b""
        self.next_id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout_s: float = 60.0) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            while b"\0" not in self.buffer:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
        raise TimeoutError(f"{method} got no answer in {timeout_s} s")


def screenshot(url: str, wait_s: float, size: tuple[int, int] = (1000, 700)) -> bytes:
    """PNG bytes of ``url`` after ``wait_s`` real seconds in headless Chromium."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("no chromium executable")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    profile = tempfile.mkdtemp(prefix="occuseg-chromium-")
    def child_fds() -> None:
        """In the child: the command pipe on fd 3, the reply pipe on fd 4 (inheritable)."""
        high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    # The browser reads commands on fd 3 and writes replies on fd 4.
    process = subprocess.Popen(
        [exe, "--headless=new", "--no-sandbox", "--remote-debugging-pipe",
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
         "--no-first-run", "--disable-background-networking", "--disable-sync",
         f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        close_fds=False, preexec_fn=child_fds)
    os.close(to_browser_r)
    os.close(from_browser_w)
    pipe = _Pipe(to_browser_w, from_browser_r)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        pipe.call("Emulation.setDeviceMetricsOverride", {"width": size[0], "height": size[1],
                                                         "deviceScaleFactor": 1,
                                                         "mobile": False}, session)
        pipe.call("Page.navigate", {"url": url}, session)
        time.sleep(wait_s)
        data = pipe.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        return base64.b64decode(data)
    finally:
        try:
            pipe.call("Browser.close", timeout_s=5.0)
        except (RuntimeError, TimeoutError, OSError):
            pass
        os.close(to_browser_w)
        os.close(from_browser_r)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)
