"""What the LLM actor reads and writes: ``llm.request``, ``llm.tokens``, ``llm.result``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import orjson

from bus.envelope import Kind
from bus.messages.body import Body, HistoryMessage


def history_digest(messages: Sequence[HistoryMessage]) -> str:
    """The digest of ``messages``: BLAKE2b-128 of their canonical JSON (keys sorted).

    Both ends of a request compute it over plain JSON values (a JSON round
    trip changes nothing in it), so equal digests mean equal messages.
    """
    raw = orjson.dumps(list(messages), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class HistoryRef:
    """The part of a call's history an ``llm.request`` refers to instead of carrying it.

    ``count`` history messages from ``start``, an offset that counts from the
    call's first message ever (messages the caps dropped from the front keep
    their numbers, so a shifted prefix is never taken for the same one),
    whose ``history_digest`` is ``digest``. ``n``: the request's number in
    its call (1, 2, ...), so a reader of the call's state can tell a state
    older than the request from one that has moved on.
    """

    start: int
    count: int
    digest: str
    n: int

    def to_body(self) -> dict[str, Any]:
        return {"start": self.start, "count": self.count, "digest": self.digest, "n": self.n}

    @classmethod
    def from_body(cls, kind: Kind, body: Mapping[str, Any]) -> Self:
        b = Body(kind, body)
        ref = cls(
            start=b.int_("start"), count=b.int_("count"), digest=b.str_("digest"), n=b.int_("n")
        )
        if ref.start < 0 or ref.count < 0:
            raise b.fail("count" if ref.count < 0 else "start", "0 or more")
        return ref


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """``llm.request``: complete this conversation; the reply answers caller event ``reply_to``.

    ``reply_to`` None (entries written before it existed): the envelope's ``seq``.
    ``prompt_ms``: when the gateway received the caller's words this answers
    (wall-clock ms, its envelope's ``ts``): the caller's wait, and so the
    first-token budget, starts there. None: not known (the request's ``ts``).

    ``history`` None (entries written before it existed, hand-made requests):
    ``messages`` is the whole conversation as the model sees it. Set: the
    request carries only what its reader cannot already know. The call's
    history is the ``history`` part (which an earlier request of the call
    carried, and the call's state holds) followed by ``messages``, the
    history messages new since, as stored (consecutive messages of one role
    not yet merged); ``actors/llm/history.py`` rebuilds it.

    ``held``: a speculative reply to an interim prompt
    (``actors.conversation.speculation``): its token entries are marked
    ``held`` and the gateway keeps them until the conversation adopts the
    reply (``gateway.adopt``); its tools run only after ``control.adopt``.
    Written only when true, so other requests' bodies are as before.
    """

    KIND: ClassVar[Kind] = Kind.LLM_REQUEST

    system: str
    messages: Sequence[HistoryMessage]
    reply_to: int | None = None
    prompt_ms: float | None = None
    history: HistoryRef | None = None
    held: bool = False

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"system": self.system, "messages": list(self.messages)}
        if self.reply_to is not None:
            body["reply_to"] = self.reply_to
        if self.prompt_ms is not None:
            body["prompt_ms"] = self.prompt_ms
        if self.history is not None:
            body["history"] = self.history.to_body()
        if self.held:
            body["held"] = True
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        ref = body.get("history")
        return cls(
            system=b.str_("system", ""),
            messages=b.messages("messages") if body.get("messages") is not None else [],
            reply_to=b.opt_int("reply_to"),
            prompt_ms=b.opt_number("prompt_ms"),
            history=None if ref is None else HistoryRef.from_body(cls.KIND, b.object_("history")),
            held=b.bool_("held", False),
        )


@dataclass(frozen=True, slots=True)
class LlmTokens:
    """``llm.tokens``: batch ``index`` (0, 1, ...) of the reply to ``reply_to``.

    ``generation``: which attempt at the request wrote it. The first attempt
    writes 0 (the field is left out, as before it existed); an attempt that
    resumes a request another one started (a reclaim, a retry) takes a
    higher number and first writes an *opening* entry (``index`` -1, no
    text), after which the gateway forwards nothing of an older generation
    of that reply (``gateway.fence``, ``actors.llm.resume``).
    ``held``: of a speculative reply; the gateway buffers it until the reply
    is adopted (``gateway.fence``). Written only when true.
    """

    KIND: ClassVar[Kind] = Kind.LLM_TOKENS
    OPENING: ClassVar[int] = -1  # the index of a generation's opening entry

    text: str
    index: int
    last: bool
    reply_to: int
    generation: int = 0
    held: bool = False

    @property
    def opening(self) -> bool:
        """A generation's opening entry: it carries no text."""
        return self.index < 0

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "text": self.text,
            "index": self.index,
            "last": self.last,
            "reply_to": self.reply_to,
        }
        if self.generation:
            body["generation"] = self.generation
        if self.held:
            body["held"] = True
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        return cls(
            text=b.str_("text"),
            index=b.int_("index"),
            last=b.bool_("last"),
            reply_to=b.int_("reply_to"),
            generation=b.int_("generation", 0),
            held=b.bool_("held", False),
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens billed for one completion; prompt-cache reads and writes apart.

    ``input_tokens`` excludes the cached ones: the prompt was
    ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    def to_body(self) -> dict[str, Any]:
        body = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        # Only when there are some, so bodies without a cache stay as before.
        if self.cache_read_input_tokens:
            body["cache_read_input_tokens"] = self.cache_read_input_tokens
        if self.cache_creation_input_tokens:
            body["cache_creation_input_tokens"] = self.cache_creation_input_tokens
        return body

    @classmethod
    def from_body(cls, kind: Kind, body: Mapping[str, Any]) -> Self:
        b = Body(kind, body)
        return cls(
            input_tokens=b.int_("input_tokens", 0),
            output_tokens=b.int_("output_tokens", 0),
            cache_read_input_tokens=b.int_("cache_read_input_tokens", 0),
            cache_creation_input_tokens=b.int_("cache_creation_input_tokens", 0),
        )


@dataclass(frozen=True, slots=True)
class Timings:
    """Milliseconds from taking the request to the first token and to the result."""

    first_token_ms: float | None = None
    total_ms: float = 0.0

    def to_body(self) -> dict[str, Any]:
        return {"first_token_ms": self.first_token_ms, "total_ms": self.total_ms}

    @classmethod
    def from_body(cls, kind: Kind, body: Mapping[str, Any]) -> Self:
        b = Body(kind, body)
        return cls(
            first_token_ms=b.opt_number("first_token_ms"), total_ms=b.number("total_ms", 0.0)
        )


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool use of a reply and what came of it."""

    id: str
    name: str
    input: Mapping[str, Any] = field(default_factory=dict, hash=False)
    result: str = ""
    is_error: bool = False

    def to_body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "input": dict(self.input),
            "result": self.result,
            "is_error": self.is_error,
        }

    @classmethod
    def from_body(cls, kind: Kind, body: Mapping[str, Any]) -> Self:
        b = Body(kind, body)
        return cls(
            id=b.str_("id", ""),
            name=b.str_("name", ""),
            input=b.object_("input", {}),
            result=b.str_("result", ""),
            is_error=b.bool_("is_error", False),
        )


@dataclass(frozen=True, slots=True)
class LlmResult:
    """``llm.result``: the finished reply to ``reply_to``.

    ``text`` is everything streamed to the caller, in order; ``messages`` the
    history messages the reply produced (text, ``tool_use`` and their
    ``tool_result``, in order). ``messages`` None (entries written before it
    existed): ``text`` is the whole reply. ``error`` set: the provider failed
    and ``text`` ends with the apology; ``cancelled``: a ``control.cancel``
    stopped it.
    """

    KIND: ClassVar[Kind] = Kind.LLM_RESULT

    text: str
    reply_to: int
    stop_reason: str | None = None
    usage: Usage = Usage()
    timings: Timings = Timings()
    error: str | None = None
    cancelled: bool = False
    messages: Sequence[HistoryMessage] | None = None
    tool_calls: Sequence[ToolCall] = ()
    # A held request its worker took too late, dropped unrun (actors.llm.shed).
    shed: bool = False

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "text": self.text,
            "reply_to": self.reply_to,
            "stop_reason": self.stop_reason,
            "usage": self.usage.to_body(),
            "timings": self.timings.to_body(),
            "error": self.error,
            "cancelled": self.cancelled,
            "messages": None if self.messages is None else list(self.messages),
            "tool_calls": [c.to_body() for c in self.tool_calls],
        }
        if self.shed:
            body["shed"] = True
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        b = Body(cls.KIND, body)
        calls = b.list_("tool_calls", ())
        if not all(isinstance(c, dict) for c in calls):
            raise b.fail("tool_calls", "a list of objects")
        return cls(
            text=b.str_("text", ""),
            reply_to=b.int_("reply_to"),
            stop_reason=b.opt_str("stop_reason"),
            usage=Usage.from_body(cls.KIND, b.object_("usage", {})),
            timings=Timings.from_body(cls.KIND, b.object_("timings", {})),
            error=b.opt_str("error"),
            cancelled=b.bool_("cancelled", False),
            messages=None if body.get("messages") is None else b.messages("messages"),
            tool_calls=tuple(ToolCall.from_body(cls.KIND, c) for c in calls),
            shed=b.bool_("shed", False),
        )
