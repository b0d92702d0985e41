"""The README's sections below the set-up: the configuration reference lists every key of
`smallgpt.config` with its real default, and the 5-minute tour's commands run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from smallgpt.config.loader import config_to_dict, valid_keys
from smallgpt.config.schema import Config

README = Path(__file__).resolve().parent.parent / "README.md"


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def reference_rows() -> dict[str, str]:
    rows = re.findall(
        r"^\| `([\w.]+)` \| `?(.*?)`? \|", section("Configuration reference"), re.MULTILINE
    )
    return dict(rows)


def default_of(key: str) -> object:
    value: object = config_to_dict(Config())
    for part in key.split("."):
        value = value[part]  # type: ignore[index]
    return value


def test_configuration_reference_lists_every_key_once_with_its_default():
    rows = reference_rows()
    assert sorted(rows) == sorted(valid_keys())
    for key, written in rows.items():
        shown = yaml.safe_load(written)
        expected = default_of(key)
        if isinstance(expected, float) and isinstance(shown, str):
            shown = float(shown)  # YAML 1.1 reads 1e-08 as a string
        assert shown == expected, key


def tour_script(workdir: Path) -> str:
    """The tour's bash block, with a 3-step training run and a small text to evaluate."""
    block = re.search(r"```bash\n(.*?)```", section("A 5-minute tour"), re.DOTALL).group(1)
    replacements = {
        "--run-dir runs/tour": "--run-dir runs/tour train.max_steps=3 "
        "train.eval_batches=1 log.progress_bar=false",
        '--data "$CORPUS" --json': "--data small.txt --json --quiet",
        "--stride 64": "--stride 64 --quiet",
    }
    for old, new in replacements.items():
        assert block.count(old) == 1, old
        block = block.replace(old, new)
    (workdir / "small.txt").write_text("To be, or not to be, that is the question.\n" * 20)
    (workdir / "refs.txt").write_text("the cat sat on the mat\na quick brown fox\n")
    (workdir / "hyps.txt").write_text("the cat sat on a mat\nthe quick brown fox\n")
    return "set -euo pipefail\n" + block


@pytest.mark.slow
def test_the_tour_commands_run(tmp_path):
    pytest.importorskip("transformers")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        ["bash", "-c", tour_script(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    assert "wrote tokenizer.json: 2000 ids" in out
    assert out.count("bits per byte") >= 2 and '"perplexity"' in out
    assert "ROMEO:" in out and "BLEU " in out
    assert (tmp_path / "hf" / "tour" / "config.json").is_file()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def first_command(block: str) -> str:
    return next(line for line in block.splitlines() if line.strip() and not line.startswith("#"))


# Every bash block of the README, known by the start of its first command, and the test running it.
RUN_BY = {
    "make demo": "tests/test_readme.py (make demo for real; make test as a dry run, it is this run)",
    "CORPUS=$(python": "test_the_tour_commands_run",
    "python -m smallgpt.train demo-cpu train.profile=true": "test_the_profiling_example_runs",
}


def test_every_shell_block_of_the_readme_is_run_by_a_test():
    starts = [first_command(block) for block in bash_blocks()]
    for start in starts:
        owners = [key for key in RUN_BY if start.startswith(key)]
        assert len(owners) == 1, (
            f"no test runs the README's bash block {start!r}: add one to RUN_BY"
        )
    assert len(starts) == len(RUN_BY), starts


def readme_block(start: str) -> str:
    (block,) = [b for b in bash_blocks() if first_command(b).startswith(start)]
    return block


@pytest.mark.slow
def test_the_profiling_example_runs(tmp_path):
    block = readme_block("python -m smallgpt.train demo-cpu train.profile=true")
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + block],
        cwd=tmp_path,
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    profile = tmp_path / "runs" / "profiled" / "profile"
    assert (profile / "trace.json").stat().st_size > 0
    table = (profile / "top_operators.txt").read_text(encoding="utf-8")
    assert table.strip() and table.strip() in done.stdout + done.stderr
    # the preset's warm-up (60 steps) is longer than the run: it trains, and says so once
    assert done.stderr.count("exceeds train.max_steps (20)") == 1
