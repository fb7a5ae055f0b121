"""Provider options parsed from settings, without importing any provider's SDK.

The settings module checks these at start-up for every role; only the LLM
role imports the SDK itself (seconds of CPU), so the parsing lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.messages.json import JsonObject

EFFORTS = ("low", "medium", "high", "xhigh", "max")


@dataclass(frozen=True, slots=True)
class Thinking:
    """A thinking setting: ``off``, ``adaptive`` or ``budget`` (``budget_tokens``)."""

    mode: str
    budget_tokens: int = 0

    def param(self) -> JsonObject:
        """The Messages API ``thinking`` parameter."""
        if self.mode == "off":
            return {"type": "disabled"}
        if self.mode == "adaptive":
            return {"type": "adaptive"}
        return {"type": "enabled", "budget_tokens": self.budget_tokens}


def parse_thinking(value: str) -> Thinking:
    """``"off"``, ``"adaptive"`` or ``"budget:N"`` (N at least 1024, as the API requires)."""
    text = value.strip().lower()
    if text in ("off", "adaptive"):
        return Thinking(text)
    head, _, tail = text.partition(":")
    if head == "budget" and tail.strip().isdigit() and int(tail) >= 1024:
        return Thinking("budget", int(tail))
    raise ValueError(
        f"thinking must be 'off', 'adaptive' or 'budget:N' with N >= 1024, not {value!r}"
    )


def parse_effort(value: str) -> str:
    """One of the API's effort levels (``low`` ... ``max``)."""
    text = value.strip().lower()
    if text not in EFFORTS:
        raise ValueError(f"effort must be one of {', '.join(EFFORTS)}, not {value!r}")
    return text
