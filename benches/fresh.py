"""Run a measurement in a fresh Python process, so first-call costs count and nothing is cached."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Appended to every snippet: the child reports its own peak RSS in MB. VmHWM, not ru_maxrss:
# Linux carries ru_maxrss over from the forking parent (pytest), which would inflate it.
_EPILOGUE = """
import json as _json
with open("/proc/self/status") as _status:
    _hwm = next(line for line in _status if line.startswith("VmHWM:"))
RESULT["peak_rss_mb"] = int(_hwm.split()[1]) / 1024
print("RESULT=" + _json.dumps(RESULT))
"""


def run_fresh(code: str, timeout: float = 900.0, env: dict[str, str] | None = None) -> dict:
    """Run `code` in a new interpreter; the code must fill a dict named RESULT. Returns that dict.

    Raises RuntimeError with the child's stderr when it fails.
    """
    script = "RESULT = {}\n" + textwrap.dedent(code) + _EPILOGUE
    proc = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT="):
            return json.loads(line[len("RESULT=") :])
    raise RuntimeError(f"benchmark child printed no RESULT line:\n{proc.stdout[-2000:]}")
