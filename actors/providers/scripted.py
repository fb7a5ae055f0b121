"""An offline, deterministic provider: for the demo, tests and no-API-key runs.

The reply is derived from the conversation only, so the same history always
gives the same reply: "You said: <caller's last words>. That was message <n>
from you." It is streamed word by word with the spaces kept, paced by
``first_token_ms`` and ``token_gap_ms`` on the provider's own clock: the
first word is due ``first_token_ms`` after the stream starts and each next
one ``token_gap_ms`` after the previous was due, as from a network stream
(a consumer that falls behind finds the missed words waiting). The waits
share one timer (``actors.timers.SharedTimer``) and happen only for values
above 0, so tests under ``autojump_clock`` stay instantaneous. A request with a
``prefill`` (a resumed reply) streams only the rest of the same reply.

Tools, so end-to-end tests need no network: when the request offers a tool
and the caller's last words (the last user message with text) ask for it,
the reply is a short sentence and a ``tool_use`` (stop reason
``tool_use``); once the request ends with the tool results, the reply is
the follow-up in ``FOLLOW_UP`` (empty for ``end_call`` and ``transfer``;
a user tool's result read out as it is; "Sorry, I could not do that." when
a result is an error). Triggers, on
whole words, case-insensitive:

- ``end_call``: "goodbye", "bye" -> "Thanks for calling. Goodbye!"
- ``transfer``: "transfer", "agent", "person", "human" -> "Let me transfer
  you to a person."
- ``send_digits``: "press" or "dial" followed by digits, e.g. "press 1 2 3"
  -> digits "123".
- ``switch_language``: "spanish"/"español" -> "es-ES", "french"/"français"
  -> "fr-FR", "english" -> "en-US".
- any other (user) tool: its name, underscores read as spaces, in the
  caller's words -> input ``{"query": <the caller's words>}``.

Tool use ids are deterministic (``toolu_scripted_<n>_<name>``, n = number
of assistant tool uses in the history so far), so a redelivered request asks
for the same tool use and the idempotency cache recognises it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from actors.providers.base import Completion, CompletionRequest, ToolUse, Usage, message_text
from actors.timers import SharedTimer
from bus.messages import ContentBlock, HistoryMessage, ToolResultBlock
from bus.messages.json import JsonObject

_PIECES = re.compile(r"\s*\S+\s*")
_WORDS = re.compile(r"[\w']+")
_DIGITS_AFTER = re.compile(r"\b(?:press|dial)\b((?:[\s,]*[0-9*#])+)", re.IGNORECASE)
_LANGUAGES = {
    "spanish": "es-ES",
    "español": "es-ES",
    "espanol": "es-ES",
    "french": "fr-FR",
    "français": "fr-FR",
    "francais": "fr-FR",
    "english": "en-US",
}
TOOL_LEAD_IN = {
    "end_call": "Thanks for calling. Goodbye!",
    "transfer": "Let me transfer you to a person.",
    "send_digits": "Sending the digits now.",
    "switch_language": "Switching languages.",
}
FOLLOW_UP = {
    "end_call": "",
    "transfer": "",
    "send_digits": "Done.",
    "switch_language": "Listo. ¿En qué puedo ayudarle?",
}
_TOOL_ERROR = "Sorry, I could not do that."


def _said(messages: Sequence[HistoryMessage]) -> list[str]:
    """The caller's words: user messages with text (tool results are not words)."""
    out = []
    for m in messages:
        if m["role"] == "user":
            text = message_text(m)
            if text.strip():
                out.append(text)
    return out


def scripted_reply(messages: Sequence[HistoryMessage]) -> str:
    """The reply the scripted provider gives to ``messages`` when no tool applies."""
    said = _said(messages)
    if not said:
        return "Hello! How can I help you today?"
    last = said[-1].strip().rstrip(".!?").strip() or "nothing"
    return f"You said: {last}. That was message {len(said)} from you."


def scripted_tool_use(
    messages: Sequence[HistoryMessage], tools: Sequence[Mapping[str, Any]]
) -> tuple[str, JsonObject] | None:
    """The tool (name, input) the caller's last words ask for, if offered."""
    said = _said(messages)
    if not said:
        return None
    words_text = said[-1]
    words = {w.lower() for w in _WORDS.findall(words_text)}
    offered = [str(t.get("name", "")) for t in tools]
    for name in offered:
        if name == "end_call" and words & {"goodbye", "bye"}:
            return name, {}
        if name == "transfer" and words & {"transfer", "agent", "person", "human"}:
            return name, {}
        if name == "send_digits":
            match = _DIGITS_AFTER.search(words_text)
            if match:
                return name, {"digits": re.sub(r"[\s,]", "", match.group(1))}
        if name == "switch_language":
            for word, code in _LANGUAGES.items():
                if word in words:
                    return name, {"language": code}
        if name and name not in TOOL_LEAD_IN:
            spoken = name.replace("_", " ").lower()
            if re.search(rf"\b{re.escape(spoken)}\b", words_text.lower()):
                return name, {"query": words_text.strip()}
    return None


def _tool_results(messages: Sequence[HistoryMessage]) -> list[ToolResultBlock]:
    """The tool_result blocks of the last message, when it holds them."""
    if not messages or messages[-1]["role"] != "user":
        return []
    content = messages[-1]["content"]
    if isinstance(content, str):
        return []
    return [b for b in content if b["type"] == "tool_result"]


def _tool_names(messages: Sequence[HistoryMessage]) -> dict[str, str]:
    names: dict[str, str] = {}
    for m in messages:
        content = m["content"]
        if m["role"] == "assistant" and not isinstance(content, str):
            for b in content:
                if b["type"] == "tool_use":
                    names[b["id"]] = b["name"]
    return names


def _result_text(result: ToolResultBlock) -> str:
    content = result["content"]
    return content if isinstance(content, str) else "".join(b["text"] for b in content)


class _ScriptedCompletion:
    def __init__(self, provider: ScriptedProvider, request: CompletionRequest) -> None:
        self._provider = provider
        self._request = request
        self._stop_reason: str | None = None
        self._usage = Usage()
        self._tool_uses: list[ToolUse] = []

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def usage(self) -> Usage:
        return self._usage

    @property
    def tool_uses(self) -> list[ToolUse]:
        return self._tool_uses

    @property
    def content(self) -> list[ContentBlock]:
        return []  # no thinking to send back

    def _plan(self) -> tuple[str, list[ToolUse]]:
        messages = self._request.messages
        results = _tool_results(messages)
        if results:
            if any(r.get("is_error") for r in results):
                return _TOOL_ERROR, []
            names = _tool_names(messages)
            # A user tool's result is read out as it is.
            follow = [
                FOLLOW_UP.get(names.get(r["tool_use_id"], ""), _result_text(r)) for r in results
            ]
            return " ".join(f for f in follow if f), []
        wanted = scripted_tool_use(messages, self._request.tools)
        if wanted is None:
            return scripted_reply(messages), []
        name, tool_input = wanted
        n = len(_tool_names(messages))
        use = ToolUse(id=f"toolu_scripted_{n}_{name}", name=name, input=tool_input)
        return TOOL_LEAD_IN.get(name, "One moment."), [use]

    async def deltas(self) -> AsyncIterator[str]:
        reply, tool_uses = self._plan()
        # Resuming after a failover: the same history gives the same reply,
        # so the part already spoken is cut off and the rest streamed as usual.
        reply = reply[len(self._request.prefill) :]
        pieces = _PIECES.findall(reply)
        prompt_words = len(self._request.system.split()) + sum(
            len(message_text(m).split()) for m in self._request.messages
        )
        self._usage = Usage(input_tokens=prompt_words, output_tokens=0)
        pacer = self._provider.pacer
        gap_s = self._provider.token_gap_ms / 1000
        due = trio.current_time()
        if self._provider.first_token_ms > 0:
            due += self._provider.first_token_ms / 1000
            await pacer.sleep_until(due)
        for i, piece in enumerate(pieces):
            if i and gap_s > 0:
                # Each word is due a gap after the previous one was due, as
                # a network stream runs at the provider's rate: a consumer
                # that fell behind finds the words it missed waiting for it.
                due += gap_s
                await pacer.sleep_until(due)
            self._usage.output_tokens += 1
            yield piece
        self._tool_uses = tool_uses
        self._stop_reason = "tool_use" if tool_uses else "end_turn"


class ScriptedProvider:
    """Echoes the caller; no network, no randomness, no global state."""

    def __init__(self, first_token_ms: float = 0, token_gap_ms: float = 0) -> None:
        self.first_token_ms = first_token_ms
        self.token_gap_ms = token_gap_ms
        # One timer for every stream's word gaps: trio.sleep per word (a
        # cancel scope armed and unwound by raising Cancelled) cost a quarter
        # of the LLM worker's CPU at 1,000 calls, spent on the stand-in for
        # the network rather than on Switchboard.
        self.pacer = SharedTimer()

    @asynccontextmanager
    async def complete(self, request: CompletionRequest) -> AsyncIterator[Completion]:
        """Start a scripted completion (see the module docstring)."""
        yield _ScriptedCompletion(self, request)
