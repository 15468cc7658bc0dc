"""The layers of ARCHITECTURE.md, checked on the source: imports point down only.

Every ``from loadgen.X ...`` / ``import loadgen.X`` in a package (function-level imports
included) is an edge between packages. The test fails on any edge that points up the table
below, which rules out cycles too, and names the module that made it. The simulated sides hold
no argparse and no signal handling: every command and every Ctrl-C goes through the one runner.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).parents[1] / "loadgen"
#: A package imports only packages of a lower layer (the two sides share one and never meet).
#: ``north`` (the application side) reuses the platform's pure pacing, mix and records, so it
#: sits one layer above the sides and beside ``report``, which it never imports. The dashboard
#: sits with report/ but above it: it reads the summary code of report/.
LAYER: Final = {
    "units": 0, "errors": 0, "seeds": 0, "deadline_heap": 0, "protocol": 1, "http": 2, "metrics": 3,
    "device": 4, "platform": 4, "north": 5, "report": 5, "dashboard": 5.5, "campaign": 6, "scale": 7,
    "commands": 8, "bench": 8, "cli": 9, "__main__": 10,
}  # fmt: skip


def _edges() -> list[tuple[str, str, str]]:
    edges = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        package = parts[0]
        if package == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                pieces = name.split(".")
                if pieces[0] == "loadgen" and len(pieces) > 1 and pieces[1] != package:
                    edges.append((package, pieces[1], "/".join(parts)))
    return edges


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith("_")}
    modules = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(LAYER)


def test_imports_point_down_only() -> None:
    upward = [
        f"{module}: {source} imports {target}"
        for source, target, module in _edges()
        if LAYER[target] >= LAYER[source]
    ]
    assert upward == []


@pytest.mark.parametrize("side", ["device", "platform", "north"])
def test_the_sides_hold_no_argparse_and_no_signals(side: str) -> None:
    for path in (ROOT / side).rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "argparse" not in text, path
        assert "signal" not in text, path
