"""The layering, checked: which of our packages each part may import.

Dependencies point one way (docs/ARCHITECTURE.md, "Parts and dependencies")::

    switchboard -> gateway, actors -> relay, bus

- ``relay`` (the ConversationRelay vocabulary) and ``bus`` import nothing of ours;
- ``gateway`` and ``actors`` import only ``relay`` and ``bus`` (and themselves),
  so they never import each other: they meet only through bus messages;
- Twilio's side (the simulator) imports only ``relay``: it must behave like
  Twilio, knowing nothing of how the app is built.

Every import statement of every module is read with ``ast`` (imports inside
functions and ``TYPE_CHECKING`` blocks count too), so the rule holds for the
code as written, not for what happens to be imported at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = frozenset({"relay", "bus", "gateway", "actors", "switchboard"})

# part -> the packages of ours it may import besides itself.
ALLOWED: dict[str, frozenset[str]] = {
    "relay": frozenset(),
    "bus": frozenset(),
    "gateway": frozenset({"relay", "bus"}),
    "actors": frozenset({"relay", "bus"}),
}
# Twilio's side: the modules (or packages, as directories) that play Twilio.
TWILIO_SIDE: tuple[str, ...] = ("switchboard/twilio",)


def _modules(part: str) -> list[Path]:
    path = ROOT / part
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.py") if ".venv" not in p.parts)


def _package_of(module: Path) -> str:
    """The dotted package a module of ours lives in (for relative imports)."""
    return ".".join(module.relative_to(ROOT).parent.parts)


def _imports(module: Path, package: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``module``.

    ``package`` is the module's package, for relative imports (by default
    read from its place in the tree).
    """
    tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = (_package_of(module) if package is None else package).split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield node.lineno, name


def _violations(
    modules: list[Path], own: str, allowed: frozenset[str], package: str | None = None
) -> list[str]:
    found = []
    for module in modules:
        for line, name in _imports(module, package):
            top = name.split(".")[0]
            if top in OURS and top != own and top not in allowed:
                found.append(f"{module.name}:{line} imports {name}")
    return found


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_lies_below_it(part: str) -> None:
    modules = _modules(part)
    assert modules, f"no modules found for {part}/"
    assert _violations(modules, part, ALLOWED[part]) == []


def test_twilio_side_imports_only_the_relay_vocabulary() -> None:
    modules = [m for side in TWILIO_SIDE for m in _modules(side)]
    assert modules, f"no modules found for {TWILIO_SIDE}"
    found = []
    for module in modules:
        own = module.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        for line, name in _imports(module):
            top = name.split(".")[0]
            inside = any(
                name == o or name.startswith(o + ".")
                for o in (own, *(s.removesuffix(".py").replace("/", ".") for s in TWILIO_SIDE))
            )
            if top in OURS and top != "relay" and not inside:
                found.append(f"{module.relative_to(ROOT)}:{line} imports {name}")
    assert found == []


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    # The rule is only as good as the import reader: a plain, a from, a
    # relative one and a function-local import of forbidden packages are all seen.
    module = tmp_path / "probe.py"
    module.write_text(
        "import actors.runtime\n"
        "from actors import conversation\n"
        "from .. import actors as sibling\n"
        "from . import http\n"
        "def f() -> None:\n"
        "    from switchboard.cli import main\n",
        encoding="utf-8",
    )
    names = [name for _, name in _imports(module, "gateway.sub")]
    assert names == ["actors.runtime", "actors", "gateway", "gateway.sub", "switchboard.cli"]
    found = _violations([module], "gateway", ALLOWED["gateway"], "gateway.sub")
    assert found == [
        "probe.py:1 imports actors.runtime",
        "probe.py:2 imports actors",
        "probe.py:6 imports switchboard.cli",
    ]
