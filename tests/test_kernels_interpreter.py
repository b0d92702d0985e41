"""Runs the kernel test modules under the Triton interpreter when there is no GPU.

Triton picks interpreter or compiler when it is first imported, so the CPU runs of
test_kernels_attention.py and test_kernels_cross_entropy.py happen in a child pytest with
TRITON_INTERPRET=1 (one per module, gpu-marked tests deselected). This session's environment stays
untouched, so other test modules never see interpreted kernels. With CUDA the modules run directly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from smallgpt.kernels._support import interpreting, triton_importable

_REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the kernel modules run directly")
@pytest.mark.skipif(interpreting(), reason="TRITON_INTERPRET=1 already: the modules run directly")
@pytest.mark.skipif(not triton_importable(), reason="triton is not installed")
@pytest.mark.parametrize("module", ["test_kernels_attention.py", "test_kernels_cross_entropy.py"])
def test_kernel_module_passes_under_the_triton_interpreter(module):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "not gpu",
        "-p",
        "no:cacheprovider",
        f"tests/{module}",
    ]
    proc = subprocess.run(
        command, check=False, cwd=_REPO, env=env, capture_output=True, text=True, timeout=600
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, f"{module} failed under the interpreter:\n{proc.stdout[-6000:]}"
    # every selected test must have run: a skip here would mean the interpreter was not in effect
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, summary
