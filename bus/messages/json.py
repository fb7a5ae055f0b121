"""JSON values as types: what ``json.loads`` returns and ``json.dumps`` takes.

Tool input schemas, the model's tool input, and the Messages API payloads are
JSON: their shape is open (a schema nests; a tool's input is whatever its
schema allows), so they are typed as JSON rather than as one ``TypedDict``.
``JsonValue`` is recursive, so a value read from it must be narrowed
(``isinstance``) before use: unlike ``Any``, nothing unchecked gets through.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["JsonObject", "JsonValue"]

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
JsonObject: TypeAlias = dict[str, JsonValue]
