"""Each module holds one concept, and each function fits on a screen.

The limits the product holds to: no module in ``relay/``, ``bus/``,
``gateway/``, ``actors/`` or ``switchboard/`` over 400 lines, no function
(or method) over 60 lines, counted from its ``def`` line to its last line
(decorators not counted). A module that grows past them is a sign it holds a
second concept: split it into a module of its own rather than raise the limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("relay", "bus", "gateway", "actors", "switchboard")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _long_functions(tree: ast.AST) -> list[tuple[str, int, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append((node.name, node.lineno, length))
    return out


def test_the_packages_are_where_the_limits_look() -> None:
    # A limit that finds nothing to measure cannot fail: make sure it does.
    found = {p.relative_to(ROOT).parts[0] for p in _modules()}
    assert found == set(PACKAGES)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_its_functions_within_the_limits(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, (
        f"{path.relative_to(ROOT)} has {lines} lines (limit {MAX_MODULE_LINES}): "
        "move a concept into a module of its own"
    )
    long = _long_functions(ast.parse(text, filename=str(path)))
    assert not long, (
        f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines: "
        + ", ".join(f"{name} (line {at}, {n} lines)" for name, at, n in long)
    )
