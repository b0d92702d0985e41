"""The wheel maturin builds is complete and works on its own, outside the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("cargo") is None, reason="needs the Rust toolchain"),
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    maturin = Path(sys.executable).with_name("maturin")
    command = [str(maturin)] if maturin.exists() else [sys.executable, "-m", "maturin"]
    subprocess.run(
        [*command, "build", "--release", "--quiet", "-o", str(out)],
        cwd=REPO,
        check=True,
        timeout=1200,
    )
    (built,) = out.glob("smallgpt-*.whl")
    return built


def test_wheel_is_abi3_and_ships_kernels_presets_and_data(wheel):
    assert "-cp310-abi3-" in wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "smallgpt/__init__.py",
        "smallgpt/py.typed",
        "smallgpt/_bpe.pyi",
        "smallgpt/kernels/__init__.py",
        "smallgpt/kernels/attention.py",
        "smallgpt/kernels/cross_entropy.py",
        "smallgpt/configs/demo-cpu.yaml",
        "smallgpt/assets/tinyshakespeare.txt",
        "smallgpt/serve/static/index.html",
    ):
        assert required in names, required
    assert any(n.startswith("smallgpt/_bpe") and n.endswith(".so") for n in names)
    assert not any(n.startswith("kernels/") for n in names)  # no top-level `kernels` package


def test_wheel_installs_into_a_fresh_venv_and_imports(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
    )
    # torch and triton come from this interpreter's site-packages (appended after the venv's own,
    # so smallgpt itself can only be found in the fresh venv).
    venv_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    import torch

    (venv_site / "outer_site.pth").write_text(str(Path(torch.__file__).parent.parent) + "\n")
    code = (
        "import smallgpt, smallgpt._bpe, smallgpt.kernels, smallgpt.kernels.attention, "
        "smallgpt.kernels.cross_entropy\n"
        "tok = smallgpt.Tokenizer.train(['hello world, hello there'] * 3, vocab_size=270)\n"
        "assert tok.decode(tok.encode('hello world')) == 'hello world'\n"
        "print(smallgpt.__file__)"
    )
    done = subprocess.run(
        [str(python), "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip()).is_relative_to(venv)
