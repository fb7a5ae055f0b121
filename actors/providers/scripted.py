"""An offline, deterministic provider: for the demo, tests and no-API-key runs.

The reply is derived from the conversation only, so the same history always
gives the same reply: "You said: <caller's last words>. That was message <n>
from you." It is streamed word by word with the spaces kept, paced by
``first_token_ms`` and ``token_gap_ms`` (``trio.sleep`` only when above 0,
so tests under ``autojump_clock`` stay instantaneous). A request with a
``prefill`` (a resumed reply) streams only the rest of the same reply.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from actors.providers.base import Completion, CompletionRequest, Usage

_PIECES = re.compile(r"\s*\S+\s*")


def scripted_reply(messages: list[dict[str, str]]) -> str:
    """The reply the scripted provider gives to ``messages``."""
    said = [m.get("content", "") for m in messages if m.get("role") == "user"]
    if not said:
        return "Hello! How can I help you today?"
    last = said[-1].strip().rstrip(".!?").strip() or "nothing"
    return f"You said: {last}. That was message {len(said)} from you."


class _ScriptedCompletion:
    def __init__(self, provider: ScriptedProvider, request: CompletionRequest) -> None:
        self._provider = provider
        self._request = request
        self._stop_reason: str | None = None
        self._usage = Usage()

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def usage(self) -> Usage:
        return self._usage

    async def deltas(self) -> AsyncIterator[str]:
        reply = scripted_reply(self._request.messages)
        # Resuming after a failover: the same history gives the same reply,
        # so the part already spoken is cut off and the rest streamed as usual.
        reply = reply[len(self._request.prefill) :]
        pieces = _PIECES.findall(reply)
        prompt_words = len(self._request.system.split()) + sum(
            len(m.get("content", "").split()) for m in self._request.messages
        )
        self._usage = Usage(input_tokens=prompt_words, output_tokens=0)
        if self._provider.first_token_ms > 0:
            await trio.sleep(self._provider.first_token_ms / 1000)
        for i, piece in enumerate(pieces):
            if i and self._provider.token_gap_ms > 0:
                await trio.sleep(self._provider.token_gap_ms / 1000)
            self._usage.output_tokens += 1
            yield piece
        self._stop_reason = "end_turn"


class ScriptedProvider:
    """Echoes the caller; no network, no randomness, no global state."""

    def __init__(self, first_token_ms: float = 0, token_gap_ms: float = 0) -> None:
        self.first_token_ms = first_token_ms
        self.token_gap_ms = token_gap_ms

    @asynccontextmanager
    async def complete(self, request: CompletionRequest) -> AsyncIterator[Completion]:
        """Start a scripted completion (see the module docstring)."""
        yield _ScriptedCompletion(self, request)
