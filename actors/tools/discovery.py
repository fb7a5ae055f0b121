"""User tools: the ``switchboard.tools`` entry points and ``module:function`` references."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from actors.tools.tool import Tool

ENTRY_POINT_GROUP = "switchboard.tools"


def entry_point_tools() -> dict[str, Tool]:
    """User tools registered under the ``switchboard.tools`` entry-point group.

    Each entry point must load to a ``Tool`` whose ``name`` is the entry
    point's name (so settings can check names without importing the tools).
    """
    found: dict[str, Tool] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        loaded = ep.load()
        if not isinstance(loaded, Tool):
            raise TypeError(
                f"entry point {ENTRY_POINT_GROUP}:{ep.name} = {ep.value} is not a "
                "switchboard Tool (decorate it with actors.tools.tool)"
            )
        if loaded.name != ep.name:
            raise TypeError(
                f"entry point {ENTRY_POINT_GROUP}:{ep.name} = {ep.value} names a tool "
                f"called {loaded.name!r}: the entry point's name must be the tool's name"
            )
        found[loaded.name] = loaded
    return found


def is_reference(name: str) -> bool:
    """True for ``module:function``, a tool named by where it lives."""
    return ":" in name


def load_reference(reference: str) -> Tool:
    """The ``@tool`` at ``module:attribute`` (dotted attributes allowed).

    ``LookupError`` with a message that says what is wrong (no such module or
    attribute, or not marked ``@tool``).
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise LookupError(f"{reference!r} is not module:function")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise LookupError(f"{reference}: cannot import {module_name!r} ({exc})") from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise LookupError(f"{reference}: {module_name!r} has no {attribute!r}")
        found = getattr(found, part)
    if not isinstance(found, Tool):
        raise LookupError(f"{reference}: mark the function with @tool (from actors.tools)")
    return found


def entry_point_tool_names() -> list[str]:
    """Names of the registered ``switchboard.tools`` entry points, without loading them."""
    return [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]
