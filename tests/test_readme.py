"""The README's two commands. `make demo` runs for real in a fresh clone with a fresh virtual
environment (it builds and installs the wheel, then trains the demo); `make test` is only dry-run
(`make -n`) and compared with what the README says, because this test itself runs inside
`make test`: running it again would recurse without end.

Slow (a wheel build, a dependency install from the pip cache and the demo's training budget);
set SMALLGPT_SKIP_README_TEST=1 to skip it. The `make demo` child runs with that variable set,
so nothing it starts can come back here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SKIP = os.environ.get("SMALLGPT_SKIP_README_TEST") == "1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SKIP, reason="SMALLGPT_SKIP_README_TEST=1"),
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
    pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout"),
]


def readme_commands() -> dict[str, str]:
    """`make <target>` lines of the README's set-up block, and what their comments promise."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^make (\w+)\s+# (.+)$", text, re.MULTILINE))


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of the committed tree (no build outputs, no virtual environment)."""
    target = tmp_path_factory.mktemp("readme") / "smallgpt"
    subprocess.run(
        ["git", "clone", "--quiet", str(REPO), str(target)], check=True, capture_output=True
    )
    return target


def make(clone: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "SMALLGPT_SKIP_README_TEST": "1",  # the recursion guard
        # the checkout's compiled dependencies, so the wheel build only compiles our crate
        "CARGO_TARGET_DIR": str(REPO / "target"),
    }
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        ["make", *args],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_readme_lists_exactly_the_two_commands():
    assert sorted(readme_commands()) == ["demo", "test"]


def test_make_test_recipe_is_the_set_up_then_cargo_test_then_pytest(clone):
    assert "cargo test" in readme_commands()["test"] and "pytest" in readme_commands()["test"]
    dry = make(clone, "-n", "test", "VENV=/nonexistent/venv", timeout=60)
    assert dry.returncode == 0, dry.stderr
    steps = [
        "-m venv /nonexistent/venv",
        "maturin build --release",
        "[test]",
        "--force-reinstall --no-deps target/wheels/smallgpt-",
        "cargo test",
        "/nonexistent/venv/bin/python -m pytest",
    ]
    positions = [dry.stdout.find(step) for step in steps]
    assert all(p >= 0 for p in positions), dict(zip(steps, positions))
    assert positions == sorted(positions)


def test_make_demo_in_a_fresh_clone_and_venv_trains_and_samples(clone, tmp_path):
    venv = tmp_path / "venv"
    # A short training budget: this checks that the command works; the README records the
    # full demo's quality.
    done = make(clone, "demo", f"VENV={venv}", "DEMO_ARGS=train.max_time_minutes=0.5", timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "validation bits per byte:" in done.stdout and "samples from" in done.stdout

    run = clone / "runs" / "demo"
    samples = (run / "demo_samples.txt").read_text(encoding="utf-8")
    assert samples.startswith("ROMEO:")
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = run / "checkpoints" / "best"
    code = f"import smallgpt.checkpoint as c; c.verify_checkpoint({str(best)!r}); print(c.__file__)"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=False
    )
    assert where.returncode == 0, where.stderr
    installed = Path(where.stdout.strip())
    assert installed.is_relative_to(venv)  # the installed wheel, not the source tree
