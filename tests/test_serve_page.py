"""The page at `/` in a real headless Chromium: type a prompt, press Generate, watch it stream.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON
messages ending in NUL on fds 3 and 4), so the test needs nothing but the browser.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import time

import pytest

httpx = pytest.importorskip("httpx", reason="needs the test extra (httpx)")
pytest.importorskip("uvicorn", reason="needs smallgpt[serve]")

from serve_helpers import running_server, train_tiny_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)"
)


def _high_fd(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class DevTools:
    """A headless Chromium and one page of it, spoken to over the DevTools pipe."""

    def __init__(self, profile: str) -> None:
        # fds above 10, so that the shell can put them on 3 and 4 without clobbering
        to_browser, self._commands = map(_high_fd, os.pipe())
        self._events, from_browser = map(_high_fd, os.pipe())
        command = [
            CHROMIUM,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1000,800",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        wiring = f"3<&{to_browser} 4>&{from_browser} {to_browser}<&- {from_browser}>&-"
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" {wiring}', "chromium", *command],
            pass_fds=(to_browser, from_browser),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.session = b"", 0, None
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, **params) -> dict:
        """Send one command and wait (at most 30 s) for its answer."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            while b"\0" not in self._buffer:
                chunk = os.read(self._events, 1 << 16)
                assert chunk, "chromium closed its DevTools pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                assert "error" not in answer, answer["error"]
                return answer["result"]
        raise TimeoutError(f"no answer to {method} within 30 s")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 30):
        """Poll `expression` until it is truthy; returns its value."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression} stayed false for {seconds} s")

    def close(self) -> None:
        os.close(self._commands)
        os.close(self._events)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_page_streams_the_answer_of_the_api(tmp_path):
    run = train_tiny_run(tmp_path)
    with running_server(run) as url:
        browser = DevTools(str(tmp_path / "profile"))
        try:
            browser.call("Page.navigate", url=f"{url}/")
            browser.wait_for(
                "document.readyState === 'complete' && !!document.getElementById('run')"
            )
            browser.evaluate(
                "document.getElementById('prompt').value = 'ROMEO:';"
                "document.getElementById('max_tokens').value = '30';"
                "document.getElementById('seed').value = '3';"
                "document.getElementById('run').click(); true"
            )
            status = browser.wait_for(
                "(s => s.includes('finished') || s.startsWith('error') ? s : '')"
                "(document.getElementById('status').textContent)"
            )
            text = browser.evaluate("document.getElementById('generated').textContent")
            shot = browser.call("Page.captureScreenshot", format="png")["data"]
            (tmp_path / "page.png").write_bytes(base64.b64decode(shot))
        finally:
            browser.close()
        expected = httpx.post(
            f"{url}/v1/completions",
            timeout=30,
            json={
                "prompt": "ROMEO:",
                "max_tokens": 30,
                "temperature": 0.8,
                "top_p": 1,
                "seed": 3,
            },
        ).json()
    tokens = expected["usage"]["completion_tokens"]
    assert status.startswith(f"{tokens} tokens, ") and "tokens/s" in status, status
    assert text and text == expected["choices"][0]["text"]
    assert (tmp_path / "page.png").stat().st_size > 1000
