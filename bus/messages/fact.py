"""Facts (``event``): what happened and when, for telemetry and plug-ins."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from bus.base import MalformedEntry
from bus.envelope import Kind
from bus.messages.body import Body
from bus.messages.llm import Usage


@dataclass(frozen=True, slots=True)
class Fact:
    """``event``: fact ``name`` happened at ``t_ms`` (wall-clock ms), with its ``fields``.

    The body is ``{"fact": name, "t_ms": t_ms, **fields}``; which fields each
    fact carries is listed in ``bus/facts.py``. The typed readers below give a
    field of the expected type, or the default when it is absent or not one.
    """

    KIND: ClassVar[Kind] = Kind.EVENT

    name: str
    t_ms: float
    fields: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_body(self) -> dict[str, Any]:
        return {"fact": self.name, "t_ms": self.t_ms, **self.fields}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        rest = {k: v for k, v in body.items() if k not in ("fact", "t_ms")}
        return cls(name=b.str_("fact"), t_ms=b.number("t_ms"), fields=rest)

    def int_field(self, key: str) -> int | None:
        value = self.fields.get(key)
        return None if isinstance(value, bool) or not isinstance(value, int) else value

    def str_field(self, key: str) -> str | None:
        value = self.fields.get(key)
        return value if isinstance(value, str) else None

    def bool_field(self, key: str) -> bool:
        return self.fields.get(key) is True

    def usage(self) -> Usage | None:
        """The ``usage`` field (``completion_done``), None when absent or malformed."""
        value = self.fields.get("usage")
        if not isinstance(value, dict):
            return None
        try:
            return Usage.from_body(self.KIND, value)
        except MalformedEntry:
            return None
