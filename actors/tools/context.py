"""What a running tool knows about its call, and what one tool use produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from bus.messages.body import ToolResultBlock
from bus.messages.json import JsonObject


class FrameSink(Protocol):
    """Where a tool's frames for the caller go (the LLM actor provides it)."""

    async def __call__(self, frame: JsonObject, *, after_speech: bool) -> None: ...


@dataclass(slots=True)
class ToolContext:
    """What a running tool knows about its call, and how it reaches the caller.

    ``send`` queues an app-to-Twilio wire frame (``{"type": "sendDigits",
    ...}``) on the call's gateway, in order with the reply's text; with
    ``after_speech=True`` it goes out after the reply's last token and the
    gateway holds it until the caller has heard the reply (used by ``end``).
    """

    call: str
    session: str
    turn: int
    reply_to: int
    tool_use_id: str
    transfer_number: str | None = None
    transfer_queue: str | None = None
    languages: tuple[str, ...] = ()
    _sink: FrameSink | None = None
    # Frames sent with after_speech (recorded with a cached result).
    deferred: list[JsonObject] = field(default_factory=list)

    @property
    def idempotency_key(self) -> str:
        """Unique per tool use: ``"{call}:{reply_to}:{tool_use_id}"``."""
        return f"{self.call}:{self.reply_to}:{self.tool_use_id}"

    async def send(self, frame: JsonObject, *, after_speech: bool = False) -> None:
        """Send ``frame`` to the caller's ConversationRelay session (see class docstring)."""
        if after_speech:
            self.deferred.append(frame)
        if self._sink is not None:
            await self._sink(frame, after_speech=after_speech)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What one tool use produced (the ``tool_result`` and the summary)."""

    tool_use_id: str
    name: str
    input: JsonObject
    content: str
    is_error: bool = False

    def result_block(self) -> ToolResultBlock:
        block: ToolResultBlock = {
            "type": "tool_result",
            "tool_use_id": self.tool_use_id,
            "content": self.content,
        }
        if self.is_error:
            block["is_error"] = True
        return block

    def summary(self) -> JsonObject:
        return {
            "id": self.tool_use_id,
            "name": self.name,
            "input": self.input,
            "result": self.content,
            "is_error": self.is_error,
        }


class ToolError(Exception):
    """A tool refused its input; the message goes back to the model."""
