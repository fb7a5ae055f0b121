"""The turn rules are pure: no clock, no bus, no Trio, no lease context.

``actors/conversation/rules.py`` and the modules it is built from may import
the call state, the typed messages and the pure helpers (``actors.heard``,
``actors.history``, ``relay``), never what does I/O or reads the time. Read
with ``ast`` from the source, so the rule holds for the code as written.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "actors" / "conversation"
RULES = ("rules", "turns", "bargein", "keypad", "silence", "state", "effects")
# What the rules may import of ours, by module prefix.
ALLOWED = (
    "actors.conversation.",
    "actors.config",
    "actors.heard",
    "actors.history",
    "bus.envelope",
    "bus.messages",
    "relay",
)
# Outside ours: nothing that can do I/O or read a clock.
FORBIDDEN = ("trio", "time", "datetime", "contextvars", "asyncio", "redis", "os")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("module", RULES)
def test_a_rule_module_imports_nothing_that_does_io_or_reads_the_time(module: str) -> None:
    names = _imports(PACKAGE / f"{module}.py")
    assert names, "an empty import list means the module was not read"
    ours = [n for n in names if n.split(".")[0] in {"actors", "bus", "gateway", "relay"}]
    assert [n for n in ours if not n.startswith(ALLOWED)] == []
    assert [n for n in names if n.split(".")[0] in FORBIDDEN] == []
