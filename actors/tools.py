"""Tools the model may call: the built-ins and user tools from entry points.

A tool is a ``Tool``: a name, a description and a JSON schema (what Claude
sees), an async callable ``run(input, ctx) -> str`` and a timeout. Its
string result goes back to the model as the ``tool_result``; an exception,
or running past ``timeout_s``, becomes a ``tool_result`` with
``is_error: true`` carrying the reason, so the model can apologise instead
of the reply failing.

Built-ins (enabled per profile, ``LLMConfig.tools``):

- ``end_call``: the call ends once the reply has been spoken
  (``end`` with ``handoffData {"reason": "end_call"}``, ``after_speech``).
- ``transfer``: the same with ``{"reason": "transfer", "number": ...}`` or
  ``{"reason": "transfer", "queue": ...}`` from ``LLMConfig``; the gateway's
  ``/action`` answers ``<Dial>`` or ``<Enqueue>``.
- ``send_digits``: a ``sendDigits`` frame (``0-9 * # w``).
- ``switch_language``: a ``language`` frame, limited to ``LLMConfig.languages``.

User tools are typed functions marked ``@tool`` in any importable module,
enabled by reference (``SWITCHBOARD_TOOLS=my_tools:lookup_order``, or the
profile's ``tools.enabled``); the model sees the function's name, its
docstring as the description and a JSON Schema read from its type hints
(``actors.tool_schema``)::

    @tool(timeout_s=3.0)
    async def lookup_order(
        order_number: Annotated[str, "four digits"], ctx: ToolContext
    ) -> str:
        '''Look up an order's status.'''

The model's input is checked against the hints before the function runs (a
mismatch goes back to the model as an error result). Tools can also be
registered under the ``switchboard.tools`` entry-point group (the entry point
names a ``Tool``: ``switchboard.tools.weather = "my_pkg:weather"``), and the
older form, ``@tool(description=..., input_schema={...})`` on an
``async def f(input: dict, ctx)``, keeps working.

Side effects run at most once per tool use, across every LLM worker. The
unit is ``ToolContext.idempotency_key`` (``"{call}:{reply_to}:{tool_use_id}"``)
and one bus key, ``tool_result_key``, in the call's partition slot:

1. Claim: ``set(key, {"claimed_by": token}, ttl=timeout_s + CLAIM_MARGIN_S,
   nx=True)``. Exactly one worker wins and runs the tool.
2. Record: the winner overwrites the claim with the result
   (``{"content", "is_error", "deferred"}``, kept ``RESULT_TTL_MS``). A
   winner cancelled mid-run records ``INTERRUPTED_RESULT`` instead (the
   tool may have acted), so nobody runs it again and nobody waits for it.
3. Everyone else (a reclaim racing a slow-but-alive worker, a redelivery
   after a crash) does not run the tool: it finds the result and replays
   it, or finds a claim and waits for the result, polling with backoff
   (``CLAIM_POLL_S`` doubling to ``CLAIM_POLL_CAP_S``; the bus has no way
   to wait on a key, and such races are rare enough that a few GETs cost
   nothing). A claim whose owner died expires after its TTL; the next
   waiter's ``nx`` write then wins and that waiter runs the tool. The
   wait is bounded by twice the claim TTL (one claim seen part-way, one
   taken over by a third worker); past it the outcome is an error.

Replays send the frames a tool asked to send after the speech again
(``end`` twice is harmless: the gateway ends the call once); frames sent
at once (``sendDigits``, ``language``) are never repeated. Each outcome
is the same for every worker: the recorded one.

The guarantee has the limits of any lease: a winner stalled past its
claim's TTL (a tool ignoring its cancel, a process frozen longer than
``CLAIM_MARGIN_S``) may see another worker take over and run the tool a
second time. If the bus fails while claiming, the tool is not run (an error
outcome, so the model can say so); if it fails while recording, the tool
ran and the claim expires, after which a redelivery would run it again.
"""

from __future__ import annotations

import importlib
import inspect
import json
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, overload

import structlog
import trio

from actors.config import LLMConfig
from actors.tool_schema import ArgumentError, coerce_arguments, read_signature
from bus.base import Bus, BusError
from bus.keys import Keys, partition_of
from bus.messages.body import ToolResultBlock
from bus.messages.json import JsonObject, JsonValue
from relay import Handoff, dtmf, to_wire

log = structlog.get_logger()

ENTRY_POINT_GROUP = "switchboard.tools"
DEFAULT_TIMEOUT_S = 5.0
# How long a tool's recorded result outlives the call (redelivery window).
RESULT_TTL_MS = 24 * 3600 * 1000
CANCELLED_RESULT = "cancelled: the caller interrupted"
# A claim outlives its tool's timeout by this much: time to record the
# result after the run, plus scheduling and GC pauses.
CLAIM_MARGIN_S = 2.0
# How a worker that lost the claim polls for the winner's result.
CLAIM_POLL_S = 0.01
CLAIM_POLL_CAP_S = 0.25
# What a tool use cancelled while it ran records (replays see it).
INTERRUPTED_RESULT = "interrupted before it finished; it may or may not have taken effect"
# Bounds the shielded write of that record.
RECORD_ON_CANCEL_S = 1.0
BUILTIN_TOOLS = ("end_call", "transfer", "send_digits", "switch_language")
_MAX_DIGITS = 64


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


ToolFunc = Callable[[JsonObject, ToolContext], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool: what the model sees (``definition``) and what runs."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    run: ToolFunc
    timeout_s: float = DEFAULT_TIMEOUT_S

    def definition(self) -> JsonObject:
        """The tool as the Messages API's ``tools`` parameter lists it."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": dict(self.input_schema),
        }


@overload
def tool(func: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    description: str | None = None,
    input_schema: Mapping[str, Any] | None = None,
    name: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    description: str | None = None,
    input_schema: Mapping[str, Any] | None = None,
    name: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a ``Tool`` of a function: ``@tool`` or ``@tool(timeout_s=..., ...)``.

    A typed function (``async def`` or a quick plain ``def``) gets its schema
    from its type hints and its description from its docstring (see
    ``actors.tool_schema``); ``description`` and ``name`` override them. A
    function of the older form ``(input: dict, ctx)``, or any function given an
    explicit ``input_schema``, receives the model's input as one dict.
    ``TypeError`` names what cannot be read.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        tool_name = name or str(getattr(f, "__name__", "tool"))
        if input_schema is not None or _takes_raw_input(f):
            text = description or inspect.getdoc(f) or ""
            if not text:
                raise TypeError(f"tool {tool_name!r} needs a description or a docstring")
            return Tool(
                name=tool_name,
                description=text,
                input_schema=input_schema or {"type": "object", "properties": {}},
                run=f,
                timeout_s=timeout_s,
            )
        return _typed_tool(f, tool_name, description, timeout_s)

    return wrap(func) if func is not None else wrap


def _takes_raw_input(func: Callable[..., Any]) -> bool:
    """The older tool form: ``(input: dict, ctx: ToolContext)`` (or ``JsonObject``)."""
    params = list(inspect.signature(func).parameters.values())
    if len(params) != 2:
        return False
    # JsonValue refers to itself by name: resolving a JsonObject hint needs it in scope.
    hint = typing.get_type_hints(func, localns={"JsonValue": JsonValue}).get(params[0].name)
    return hint is dict or typing.get_origin(hint) in (dict, Mapping)


def _typed_tool(
    func: Callable[..., Any], name: str, description: str | None, timeout_s: float
) -> Tool:
    signature = read_signature(func, context_type=ToolContext)
    text = description or signature.description
    if not text:
        raise TypeError(f"tool {name!r} needs a docstring: it is what the model reads")

    async def run(input: JsonObject, ctx: ToolContext) -> str:
        try:
            kwargs = coerce_arguments(signature, input)
        except ArgumentError as exc:
            raise ToolError(str(exc)) from None
        if signature.context_parameter is not None:
            kwargs[signature.context_parameter] = ctx
        result = func(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return _as_text(result)

    return Tool(name, text, signature.input_schema(), run, timeout_s)


def _as_text(result: Any) -> str:
    """What the model reads back: a string as is, anything else as JSON."""
    if isinstance(result, str):
        return result
    if result is None:
        return "done"
    return json.dumps(result, default=str, ensure_ascii=False)


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


# ------------------------------------------------------------------ built-ins


async def _end_call(input: JsonObject, ctx: ToolContext) -> str:
    await ctx.send(to_wire(Handoff.end_call().end()), after_speech=True)
    return "The call will end after your goodbye has been spoken."


async def _transfer(input: JsonObject, ctx: ToolContext) -> str:
    destination = str(input.get("destination") or "")
    if ctx.transfer_queue and (destination == "queue" or not ctx.transfer_number):
        handoff = Handoff.transfer(queue=ctx.transfer_queue)
    elif ctx.transfer_number:
        handoff = Handoff.transfer(number=ctx.transfer_number)
    else:
        raise ToolError("no transfer number or queue is configured")
    await ctx.send(to_wire(handoff.end()), after_speech=True)
    return "The caller will be transferred after your last words have been spoken."


async def _send_digits(input: JsonObject, ctx: ToolContext) -> str:
    digits = str(input.get("digits", "")).replace(" ", "")
    if len(digits) > _MAX_DIGITS or not dtmf.is_send_digits(digits):
        raise ToolError(f"digits must be 1-64 of 0-9 * # w, got {digits!r}")
    await ctx.send({"type": "sendDigits", "digits": digits})
    return f"Sent the digits {digits}."


async def _switch_language(input: JsonObject, ctx: ToolContext) -> str:
    language = str(input.get("language", ""))
    if language not in ctx.languages:
        raise ToolError(
            f"language {language!r} is not available (available: {', '.join(ctx.languages)})"
        )
    await ctx.send({"type": "language", "ttsLanguage": language, "transcriptionLanguage": language})
    return f"Speech and transcription are now in {language}; answer in that language."


def builtin_tools(languages: Sequence[str] = ()) -> dict[str, Tool]:
    """The built-in tools; ``switch_language`` offers ``languages`` as its choices."""
    language_schema: JsonObject = {"type": "string", "description": "BCP-47 code"}
    if languages:
        language_schema["enum"] = list[JsonValue](languages)
    return {
        "end_call": Tool(
            "end_call",
            "End the phone call. Say a short goodbye in the same reply first; the call "
            "ends once it has been spoken. Use when the caller is done or says goodbye.",
            {"type": "object", "properties": {}},
            _end_call,
        ),
        "transfer": Tool(
            "transfer",
            "Transfer the caller to a human. Tell the caller you are transferring them "
            "in the same reply first; the transfer happens once that has been spoken.",
            {
                "type": "object",
                "properties": {
                    "destination": {
                        "type": "string",
                        "enum": ["number", "queue"],
                        "description": "a person's number, or the waiting queue",
                    }
                },
            },
            _transfer,
        ),
        "send_digits": Tool(
            "send_digits",
            "Press keys on the phone line (DTMF), e.g. to navigate another system's "
            "menu. Digits 0-9, * and #; w waits half a second.",
            {
                "type": "object",
                "properties": {"digits": {"type": "string", "pattern": "^[0-9*#w]+$"}},
                "required": ["digits"],
            },
            _send_digits,
        ),
        "switch_language": Tool(
            "switch_language",
            "Switch the language the caller hears and is understood in. Use when the "
            "caller asks to speak another language; then answer in it.",
            {
                "type": "object",
                "properties": {"language": language_schema},
                "required": ["language"],
            },
            _switch_language,
        ),
    }


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


def tool_result_key(keys: Keys, call: str, idempotency_key: str) -> str:
    """Where a tool use's result is recorded (in the call's partition slot)."""
    p = partition_of(call, keys.partitions)
    return f"{keys.namespace}:{{p{p}}}:tool:{idempotency_key}"


class ToolRegistry:
    """The tools enabled for the model, and how to run one use of them."""

    def __init__(self, tools: Mapping[str, Tool], enabled: Iterable[str]) -> None:
        enabled = tuple(enabled)
        unknown = [n for n in enabled if n not in tools]
        if unknown:
            raise ValueError(
                f"unknown tool(s) {', '.join(unknown)} (known: {', '.join(sorted(tools))})"
            )
        self.tools = {n: tools[n] for n in enabled}

    def __bool__(self) -> bool:
        return bool(self.tools)

    def definitions(self) -> list[JsonObject]:
        """The ``tools`` parameter for the provider (empty: no tools)."""
        return [t.definition() for t in self.tools.values()]

    async def run(
        self,
        bus: Bus,
        keys: Keys,
        ctx: ToolContext,
        name: str,
        input: JsonObject,
        *,
        ttl_ms: int = RESULT_TTL_MS,
    ) -> ToolOutcome:
        """Run one tool use, at most once per ``ctx.idempotency_key`` (module docstring).

        Returns the recorded outcome when another worker ran (or is running)
        the same tool use. Never raises for a tool's own failure (unknown
        tool, bad input, exception, timeout) or the bus's: the outcome is
        then an error result. Cancellation propagates (the caller closes the
        pair with a cancelled result).
        """
        key = tool_result_key(keys, ctx.call, ctx.idempotency_key)
        found = self.tools.get(name)
        claim_ttl_s = (found.timeout_s if found else DEFAULT_TIMEOUT_S) + CLAIM_MARGIN_S
        claim = json.dumps({"claimed_by": uuid.uuid4().hex})
        poll_s = CLAIM_POLL_S
        waited = False
        # The winner's recorded outcome, when someone else ran the tool use.
        recorded: JsonObject | None = None
        try:
            with trio.fail_after(2 * claim_ttl_s):
                while True:
                    if await bus.set(key, claim, ttl_ms=round(claim_ttl_s * 1000), nx=True):
                        break
                    raw = await bus.get(key)
                    record = None if raw is None else json.loads(raw)
                    if record is not None and "content" in record:
                        recorded = record
                        break
                    if record is not None:
                        if not waited:
                            log.info(
                                "tool_claimed_elsewhere", tool=name, tool_use_id=ctx.tool_use_id
                            )
                        waited = True
                        await trio.sleep(poll_s)
                        poll_s = min(poll_s * 2, CLAIM_POLL_CAP_S)
                    # No record: the claim expired between SET and GET; claim again.
        except trio.TooSlowError:
            log.warning("tool_claim_wait_timed_out", tool=name, tool_use_id=ctx.tool_use_id)
            return ToolOutcome(
                ctx.tool_use_id,
                name,
                input,
                "not run: another worker is still running this tool use",
                True,
            )
        except BusError as exc:
            log.warning("tool_claim_failed", tool=name, error=str(exc))
            return ToolOutcome(
                ctx.tool_use_id, name, input, f"not run: the bus is unavailable ({exc})", True
            )
        if recorded is not None:
            return await self._replay(ctx, name, input, recorded, waited=waited)
        if waited:
            log.info("tool_claim_taken_over", tool=name, tool_use_id=ctx.tool_use_id)
        try:
            outcome = await self._run_once(ctx, name, input)
        except trio.Cancelled:
            # The tool may have acted: record that, so no one runs it again
            # and no one waits out the claim. Shielded and bounded.
            with trio.move_on_after(RECORD_ON_CANCEL_S) as cleanup:
                cleanup.shield = True
                await self._record(bus, key, name, INTERRUPTED_RESULT, True, [], ttl_ms)
            raise
        await self._record(bus, key, name, outcome.content, outcome.is_error, ctx.deferred, ttl_ms)
        return outcome

    async def _replay(
        self,
        ctx: ToolContext,
        name: str,
        input: JsonObject,
        record: JsonObject,
        *,
        waited: bool,
    ) -> ToolOutcome:
        """The recorded outcome; its after-speech frames go out again."""
        deferred = record.get("deferred")
        for frame in deferred if isinstance(deferred, list) else []:
            if isinstance(frame, dict):  # we record only frames; skip anything else
                await ctx.send(frame, after_speech=True)
        log.info("tool_result_replayed", tool=name, tool_use_id=ctx.tool_use_id, waited=waited)
        return ToolOutcome(
            ctx.tool_use_id, name, input, str(record["content"]), bool(record["is_error"])
        )

    @staticmethod
    async def _record(
        bus: Bus,
        key: str,
        name: str,
        content: str,
        is_error: bool,
        deferred: list[JsonObject],
        ttl_ms: int,
    ) -> None:
        """Replace the claim with the outcome (a failed write is logged: see module docstring)."""
        record = {"content": content, "is_error": is_error, "deferred": deferred}
        try:
            await bus.set(key, json.dumps(record), ttl_ms=ttl_ms)
        except BusError as exc:
            log.warning("tool_result_unrecorded", tool=name, error=str(exc))

    async def _run_once(self, ctx: ToolContext, name: str, input: JsonObject) -> ToolOutcome:
        found = self.tools.get(name)
        if found is None:
            return ToolOutcome(ctx.tool_use_id, name, input, f"unknown tool {name!r}", True)
        started = trio.current_time()
        content: str
        is_error = False
        with trio.move_on_after(found.timeout_s) as scope:
            try:
                content = str(await found.run(input, ctx))
            except ToolError as exc:
                content, is_error = str(exc), True
            except Exception as exc:  # trio.Cancelled is a BaseException: never caught
                log.exception("tool_failed", tool=name, tool_use_id=ctx.tool_use_id)
                content, is_error = f"{type(exc).__name__}: {exc}", True
        if scope.cancelled_caught:
            content, is_error = f"timed out after {found.timeout_s:g} s", True
        log.info(
            "tool_called",
            tool=name,
            tool_use_id=ctx.tool_use_id,
            is_error=is_error,
            ms=round((trio.current_time() - started) * 1000, 3),
        )
        return ToolOutcome(ctx.tool_use_id, name, input, content, is_error)


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


def tool_registry(config: LLMConfig) -> ToolRegistry:
    """The registry for ``config.tools``: built-ins, entry-point tools, and
    ``module:function`` references (each is enabled under its tool's name).

    Entry points are loaded only when some tool is enabled. A user tool may
    not take a built-in's name.
    """
    if not config.tools:
        return ToolRegistry({}, ())
    available = builtin_tools(config.languages)
    builtin = set(available)
    for name, found in entry_point_tools().items():
        if name in builtin:
            raise ValueError(f"user tool {name!r} takes the name of a built-in tool")
        available[name] = found
    enabled: list[str] = []
    for entry in config.tools:
        if not is_reference(entry):
            enabled.append(entry)
            continue
        loaded = load_reference(entry)
        if loaded.name in builtin:
            raise ValueError(f"user tool {entry} takes the name of a built-in tool")
        available[loaded.name] = loaded
        enabled.append(loaded.name)
    return ToolRegistry(available, enabled)


def entry_point_tool_names() -> list[str]:
    """Names of the registered ``switchboard.tools`` entry points, without loading them."""
    return [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]
