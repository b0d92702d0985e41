"""The package's layout: one subpackage per pipeline stage, imports that only go down.

Every import statement of every module counts, function-local and TYPE_CHECKING ones included.
A stage may import its own modules and the stages below it; two stages on one level are
independent. A `__main__.py` imports only its stage's `cli.py`, no imported module runs as
`__main__`, and the import graph has no cycle.
"""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest

# The source tree: the layout is a property of the code, and `make lint` checks it uninstalled.
PACKAGE = Path(__file__).resolve().parent.parent / "python" / "smallgpt"

# Pipeline order, bottom first; the stages of one level never import each other.
LEVELS: list[set[str]] = [
    {"_bpe", "config", "kernels"},
    {"corpus"},  # parses JSON lines with _bpe
    {"tokenizer", "optim"},
    {"model"},
    {"checkpoint"},
    {"data", "generate"},
    {"evaluate"},
    {"train"},
    {"guide", "demo", "serve", "gpu_check"},
]
# The old flat modules, kept one release as aliases of their new homes (they sit on top).
ALIASES = {
    "distributed",
    "generate_cli",
    "health",
    "hf",
    "inference",
    "logger",
    "metrics",
    "oom",
    "plot",
    "prepare",
    "profiling",
    "runtime",
    "schedule",
    "tokenizer_cli",
}
LEVEL = {stage: level for level, stages in enumerate(LEVELS) for stage in stages}
LEVEL.update(dict.fromkeys(ALIASES, len(LEVELS)))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def smallgpt_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported smallgpt module) of every import in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("smallgpt")]
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smallgpt")
        ):
            for alias in node.names:
                # `from smallgpt import kernels` imports a module; `from smallgpt.x import y` x
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(
                    ".py"
                ).exists() or (
                    PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
                ).exists()
                found.append((node.lineno, candidate if is_module else node.module))
    return found


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_stage_is_placed_on_a_level():
    stages = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.parent.name for p in PACKAGE.glob("*/__init__.py")
    }
    stages.discard("__init__")
    assert stages <= set(LEVEL), sorted(stages - set(LEVEL))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down_the_pipeline(path):
    here = module_name(path)
    own = stage(here)
    for line, target in smallgpt_imports(path):
        other = stage(target)
        if other is None or other == own:
            continue
        assert other in LEVEL, f"{here}:{line} imports {target}, a stage on no level"
        assert LEVEL[other] < LEVEL[own], (
            f"{here}:{line} imports {target}: {other!r} is not below {own!r} in the pipeline"
        )


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("__main__.py")), ids=lambda p: p.parent.name)
def test_main_modules_only_import_their_cli(path):
    imported = {target for _, target in smallgpt_imports(path)}
    assert imported == {f"smallgpt.{path.parent.name}.cli"}


def test_no_imported_module_runs_as_main():
    # A module run as __main__ that is also imported exists twice in one process (two Trainer
    # classes); only `__main__.py` files and the demo, which nothing imports, are run.
    imported = {t for p in MODULES for _, t in smallgpt_imports(p)}
    for path in MODULES:
        if path.name != "__main__.py" and '__name__ == "__main__"' in path.read_text(
            encoding="utf-8"
        ):
            assert module_name(path) not in imported, f"{path} runs as __main__ and is imported"


def test_the_import_graph_has_no_cycle():
    graph = {module_name(p): {t for _, t in smallgpt_imports(p)} for p in MODULES}
    graph = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    # package __init__ files re-export their stage: an edge from a module to its own package's
    # __init__ would be a cycle, which this check finds too
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = (
                    trail[trail.index(target) :] + [target] if target in trail else [module, target]
                )
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state.get(target) is None:
                visit(target, [*trail, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_checkouts_root_holds_no_package_that_could_shadow_an_installed_one():
    # `python -m pytest` and any `python` started in a checkout put its root first on sys.path:
    # a module or regular package there hides an installed one of the same name (a root `kernels` link to
    # smallgpt/kernels broke `import transformers`, whose `kernels` dependency it hid).
    root = PACKAGE.parent.parent
    importable = {
        p.stem if p.suffix == ".py" else p.name
        for p in root.iterdir()
        if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    assert importable <= {"conftest"}, importable  # (tests/, benches/: namespace directories)
    shadowed = importable & set(importlib.metadata.packages_distributions())
    assert not shadowed, f"{shadowed} at the root hide installed packages of the same name"
