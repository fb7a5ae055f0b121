"""The conversation actor: applies caller events and LLM results to a call.

It reads the partition streams (``keys.calls(p)``), where the gateway puts
caller events and the LLM actor puts finished replies, so both arrive in one
order per call. It is a partitioned actor: each worker reads only the
partitions whose lease it holds (``actors.partitions``). The call's state
lives in the bus key/value store at ``keys.state(call)`` as JSON
(``CallState``), so another process can take a partition over and carry on.

Idempotency: the state records the id of the last entry applied
(``last_entry_id``); an entry at or below it is a redelivery and is skipped.
The order of effects is publish-then-persist: if the process dies in between,
the entry is delivered again, produces the same messages (same turn, same
``reply_to``), and downstream de-duplicates.

Fencing: the state is written with ``bus.set_if_lease`` under the partition's
lease, and what it publishes carries the lease's ``epoch``. A refused write
means another worker owns the partition now: ``lease_lost()`` stops this one
at once, without acking, so a stalled old owner can never overwrite the new
owner's state.

Turns. A final prompt (or a finished DTMF entry) appends a user message,
opens a turn (``OpenTurn``: where its reply goes in history, what of it was
heard) and publishes an ``llm.request``. The turn's ``llm.result`` brings the
reply's history messages; they are inserted after the turn's user message,
cut to what the caller heard when the turn was interrupted or superseded.

Barge-in (``call.interrupt``), three cases:

- the turn's result has not arrived: the interrupt (fragment, duration, the
  ``tokensPlayed`` so far) is remembered on the open turn and a
  ``control.cancel`` (reason ``interrupt``) is published; the result, when it
  comes (cancelled or complete), is cut to what was heard;
- the result was applied (the reply may still be playing), or it is the
  greeting or a re-prompt: the last reply in history is cut at once;
- what was heard comes from ``actors.heard.locate_heard``: the reply's
  ``tokensPlayed`` when subscribed, else the interrupt's fragment, else its
  duration.

A final prompt while a turn's result is not applied *supersedes* it:
``control.cancel`` (reason ``superseded``), and its result, when it comes, is
cut to its ``tokensPlayed`` (nothing, when none were reported: the caller did
not hear it); tool use/result pairs are always kept (``actors.history``).

Timers (silence re-prompt, DTMF entry idle) are deadlines in wall-clock ms in
the call state and in a per-partition index (``keys.timers(p)``, written with
``set_if_lease``). The partition owner runs one timer task per held partition
(the runtime's ``partition_task`` hook): it loads the index on acquisition,
sleeps until the earliest deadline and appends a ``conversation.timer`` entry
to the partition's stream, which is applied in order like any event and acts
only if the state's deadline still equals the entry's (later input moved or
cleared it). A new owner re-arms every timer from the index: timers survive a
failover. The index may hold deadlines the states no longer have (they fire
as no-ops), never fewer: it is written before the state whenever a deadline
is set or moved.

State cache. While a worker holds a partition's lease it is the only
writer of that partition's states (writes are fenced), so it keeps the state
it last wrote per call in memory and skips the read (``_StateCache``). An
entry is used only under the lease epoch it was written with; a handler takes
it out while it works and puts it back only after the fenced write succeeded
(a handler that fails, is cancelled or loses the lease leaves nothing
behind); a partition released or lost drops its calls; a closed call is
dropped; the cache is an LRU bounded by ``state_cache_calls``.

Trust: caller speech only ever becomes a ``user`` message. The system prompt
comes from the configuration alone, never from anything a caller said.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
import trio

from actors.config import ConversationConfig
from actors.heard import Heard, locate_heard
from actors.history import Message, request_messages, truncate_reply
from actors.runtime import Actor, current_lease, lease_lost
from bus.base import BusError, Entry, Fields, Lease, parse_id
from bus.envelope import Envelope, Kind
from bus.facts import fact_item, wall_ms
from bus.keys import GROUP_CONVERSATION, partition_of
from bus.retry import Backoff

log = structlog.get_logger()

# A timer that fired (conversation -> its own partition stream).
TIMER_KIND = "conversation.timer"
SILENCE = "silence"
DTMF = "dtmf"
REQUEST = "request"  # bounds how long a turn's request waits for an older result
REQUEST_WAIT_MS = 1000
_DTMF_KEYS = frozenset("0123456789*")
_DTMF_MAX = 64  # digits kept in one entry; more is a stuck key


@dataclass(slots=True)
class OpenTurn:
    """A turn whose ``llm.result`` has not been applied yet."""

    turn: int
    reply_to: int
    # Where the reply's messages go in history: right after its user message.
    index: int
    played: list[str] = field(default_factory=list)  # its tokensPlayed so far
    interrupted: bool = False
    fragment: str = ""
    duration_ms: float | None = None
    superseded: bool = False  # a newer turn started (or the session ended)
    cancelled: bool = False  # a control.cancel was published for it
    # False while the request waits for an older turn's (cancelled) result,
    # so that it carries what the caller heard of that turn.
    requested: bool = True


@dataclass(slots=True)
class Speaking:
    """The last reply applied to history (or the greeting, a re-prompt)."""

    start: int  # its first message in history
    count: int  # how many messages it spans
    text: str  # the text the caller was sent of it
    played: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CallState:
    """Everything the conversation knows about one call (persisted as JSON)."""

    call: str
    session: str = ""
    gateway: str = ""
    turn: int = 0
    history: list[Message] = field(default_factory=list)
    last_entry_id: str = ""
    # The ``seq`` the current turn answers (its ``reply_to``).
    reply_to: int = 0
    # The newest turn whose ``llm.result`` was applied.
    answered_turn: int = 0
    closed: bool = False
    open_turns: list[OpenTurn] = field(default_factory=list)
    speaking: Speaking | None = None
    dtmf_digits: str = ""
    dtmf_seq: int = 0  # seq of the last digit buffered
    timers: dict[str, int] = field(default_factory=dict)  # timer -> deadline (wall ms)
    reprompts: int = 0  # silence re-prompts since the caller last said anything
    ending: bool = False  # the agent is ending the call (goodbye said, end sent)

    def to_json(self) -> str:
        # orjson walks the dataclasses itself: ``json.dumps(asdict(self))``
        # deep-copied the whole history first, and written on every entry it
        # was 40% of a conversation worker's CPU on 200-turn calls.
        return orjson.dumps(self).decode()

    @classmethod
    def from_json(cls, raw: str) -> CallState:
        data: dict[str, Any] = orjson.loads(raw)
        speaking = data.get("speaking")
        return cls(
            call=str(data["call"]),
            session=str(data.get("session", "")),
            gateway=str(data.get("gateway", "")),
            turn=int(data.get("turn", 0)),
            history=[dict(m) for m in data.get("history", [])],
            last_entry_id=str(data.get("last_entry_id", "")),
            reply_to=int(data.get("reply_to", 0)),
            answered_turn=int(data.get("answered_turn", 0)),
            closed=bool(data.get("closed", False)),
            open_turns=[OpenTurn(**t) for t in data.get("open_turns", [])],
            speaking=Speaking(**speaking) if speaking else None,
            dtmf_digits=str(data.get("dtmf_digits", "")),
            dtmf_seq=int(data.get("dtmf_seq", 0)),
            timers={str(k): int(v) for k, v in data.get("timers", {}).items()},
            reprompts=int(data.get("reprompts", 0)),
            ending=bool(data.get("ending", False)),
        )

    def current(self) -> OpenTurn | None:
        """The open turn the caller is waiting on (not superseded), if any."""
        for t in self.open_turns:
            if t.turn == self.turn and not t.superseded:
                return t
        return None

    def _shift(self, at: int, delta: int) -> None:
        """``delta`` messages went in (or out) at ``at``: move the marks from there on."""
        for t in self.open_turns:
            if t.index >= at:
                t.index += delta
        if self.speaking is not None and self.speaking.start >= at:
            self.speaking.start += delta


class _PartitionTimers:
    """One partition's timer index in memory: ``{call: {timer: deadline_ms}}``."""

    def __init__(self, index: dict[str, dict[str, int]]) -> None:
        self.index = index
        self.changed = trio.Event()

    def update(self, call: str, timers: dict[str, int]) -> None:
        if timers:
            self.index[call] = dict(timers)
        else:
            self.index.pop(call, None)
        self.changed.set()

    def earliest(self) -> int | None:
        return min((d for t in self.index.values() for d in t.values()), default=None)

    def pop_due(self, at: int) -> list[tuple[str, str, int]]:
        due = [
            (call, name, d)
            for call, timers in self.index.items()
            for name, d in timers.items()
            if d <= at
        ]
        for call, name, _ in due:
            timers = self.index[call]
            del timers[name]
            if not timers:
                del self.index[call]
        return due

    def encode(self) -> str:
        return json.dumps(self.index, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | None) -> _PartitionTimers:
        index: dict[str, dict[str, int]] = {}
        if raw:
            try:
                data = json.loads(raw)
                index = {str(c): {str(n): int(d) for n, d in t.items()} for c, t in data.items()}
            except (ValueError, TypeError, AttributeError) as exc:
                # A bad index loses timers, not calls: say so and start empty.
                log.error("timer_index_malformed", error=repr(exc))
        return cls(index)


@dataclass(slots=True)
class _Cached:
    state: CallState
    lease: Lease  # the lease (name and epoch) it was written under
    partition: int
    expires_at: float  # trio time: the stored key's TTL runs out then


class _StateCache:
    """The states this worker last wrote, by call (LRU); see the module docstring."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self._items: OrderedDict[str, _Cached] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def take(self, call: str, lease: Lease | None) -> CallState | None:
        """Remove and return ``call``'s state if written under ``lease``; else None."""
        cached = self._items.pop(call, None)
        if cached is None or lease is None or cached.lease != lease:
            return None
        if trio.current_time() >= cached.expires_at:
            return None  # the stored state has expired: do as a read would
        return cached.state

    def put(self, state: CallState, lease: Lease, partition: int, ttl_ms: int) -> None:
        if self.max_calls <= 0:
            return
        expires_at = trio.current_time() + ttl_ms / 1000
        self._items[state.call] = _Cached(state, lease, partition, expires_at)
        self._items.move_to_end(state.call)
        while len(self._items) > self.max_calls:
            self._items.popitem(last=False)

    def drop(self, call: str) -> None:
        self._items.pop(call, None)

    def drop_lease(self, lease: Lease) -> None:
        """Forget every state written under ``lease``'s partition (any epoch)."""
        for call in [c for c, v in self._items.items() if v.lease.name == lease.name]:
            del self._items[call]

    def drop_partition(self, partition: int) -> None:
        for call in [c for c, v in self._items.items() if v.partition == partition]:
            del self._items[call]


class ConversationActor(Actor):
    """Keeps each call's history and asks the LLM actor for every reply.

    ``clock`` gives wall-clock milliseconds (the time base every process
    shares, so a timer's deadline means the same to the next owner).
    """

    name = "conversation"
    group = GROUP_CONVERSATION
    concurrency = 1  # per-call order: a call lives on one partition stream
    partitioned = True  # one owner per partition, by lease
    has_partition_task = True  # the timers

    def __init__(self, config: ConversationConfig, *, clock: Callable[[], float] = wall_ms) -> None:
        self.config = config
        self.keys = config.keys
        self.clock = clock
        self._timers: dict[int, _PartitionTimers] = {}
        self._cache = _StateCache(config.state_cache_calls)

    def streams(self) -> Sequence[str]:
        return self.keys.all_calls()

    async def load_state(self, call: str) -> CallState | None:
        """The stored state of ``call``, or None when it has none."""
        raw = await self.bus.get(self.keys.state(call))
        return CallState.from_json(raw) if raw is not None else None

    # -- applying entries --------------------------------------------------------

    async def handle(self, env: Envelope, entry: Entry) -> None:
        lease = current_lease()
        # Taken out of the cache: it goes back only once persisted, so a
        # handler that fails half-way never leaves a half-applied state there.
        state = self._cache.take(env.call, lease)
        if state is None:
            state = await self.load_state(env.call)
        written = await self._apply(env, entry, state)
        if lease is None:
            return  # outside a partition's lease nobody fences the state: no cache
        if written is None:
            # The entry changed nothing (a duplicate, an interim prompt...):
            # the state read or taken is still the stored one.
            written = state
        if written is None or written.closed:
            return
        partition = partition_of(written.call, self.keys.partitions)
        self._cache.put(written, lease, partition, self.config.state_ttl_ms)

    async def _apply(
        self, env: Envelope, entry: Entry, state: CallState | None
    ) -> CallState | None:
        """Apply one entry to ``state``; the state persisted, or None when nothing changed."""
        if (
            state is not None
            and state.last_entry_id
            and parse_id(entry.id) <= parse_id(state.last_entry_id)
        ):
            log.info(
                "entry_skipped_duplicate",
                kind=env.kind,
                entry_id=entry.id,
                last_entry_id=state.last_entry_id,
            )
            return None
        timers_before = dict(state.timers) if state is not None else {}
        now = self.clock()
        out: list[tuple[str, Fields]] = []  # published before the state is persisted
        if env.kind == Kind.CALL_SETUP:
            state = self._apply_setup(state, env, now, out)
        elif env.kind == Kind.CALL_PROMPT:
            if env.body.get("last", True) is not True:
                return None  # interim prompt: nothing changes, nothing to persist
            state = state or self._new_state(env)
            self._apply_prompt(state, env, now, out)
        elif env.kind == Kind.LLM_RESULT:
            if state is None:
                log.warning("llm_result_without_call", entry_id=entry.id)
                return None
            self._apply_result(state, env, now, out)
        elif env.kind == Kind.CALL_CLOSED:
            if state is None:
                log.info("call_closed_without_state", entry_id=entry.id)
                return None
            self._apply_closed(state, env, out)
        elif env.kind == Kind.CALL_INTERRUPT:
            state = state or self._new_state(env)
            self._apply_interrupt(state, env, out)
        elif env.kind == Kind.CALL_INFO:
            state = state or self._new_state(env)
            self._apply_info(state, env)
        elif env.kind == Kind.CALL_DTMF:
            state = state or self._new_state(env)
            self._apply_dtmf(state, env, now, out)
        elif env.kind == Kind.CALL_ERROR:
            state = state or self._new_state(env)
            log.warning("caller_error", seq=env.seq, description=env.body.get("description"))
        elif env.kind == TIMER_KIND:
            if state is None:
                log.info("timer_without_call", entry_id=entry.id)
                return None
            self._apply_timer(state, env, now, out)
        else:
            log.warning("unexpected_kind", kind=env.kind, entry_id=entry.id)
            return None
        state.last_entry_id = entry.id
        if out:
            await self.bus.append_many(out)
        await self._sync_timers(state, timers_before)
        await self._persist(state)
        return state

    def _new_state(self, env: Envelope) -> CallState:
        return CallState(call=env.call, session=env.session, gateway=env.gateway)

    def _apply_setup(
        self, state: CallState | None, env: Envelope, now: float, out: list[tuple[str, Fields]]
    ) -> CallState:
        resumed = state is not None
        if state is None:
            state = self._new_state(env)
        else:
            # A new session of a known call (after a failed session, or a
            # handoff back to the agent): same history, new socket, maybe a
            # different gateway. Replies still running for the old socket
            # will never be heard.
            self._end_open_turns(state, "hangup", out)
            state.session = env.session
            state.gateway = env.gateway
            state.closed = False
            state.ending = False
        state.dtmf_digits = ""
        state.timers.pop(DTMF, None)
        state.reprompts = 0
        if not state.history:
            greeting = self.config.welcome_greeting or ""
        else:
            greeting = self.config.resume_greeting
        if greeting:
            state.history.append({"role": "assistant", "content": greeting})
            state.speaking = Speaking(start=len(state.history) - 1, count=1, text=greeting)
        self._arm_silence(state, now, greeting)
        log.info(
            "call_setup",
            session=env.session,
            gateway=env.gateway,
            resumed=resumed,
            messages=len(state.history),
            greeting=bool(greeting),
        )
        return state

    def _apply_prompt(
        self, state: CallState, env: Envelope, now: float, out: list[tuple[str, Fields]]
    ) -> None:
        applied_ms = wall_ms()
        text = str(env.body.get("voicePrompt", "")).strip()
        self._caller_spoke(state)
        if state.dtmf_digits:
            # Keys pressed just before speaking belong to what the caller says.
            text = f"{self._dtmf_words(state.dtmf_digits)} {text}".strip()
            state.dtmf_digits = ""
            state.timers.pop(DTMF, None)
        # The prompt's envelope names the live session and its gateway.
        state.session = env.session or state.session
        state.gateway = env.gateway or state.gateway
        if not text:
            log.info("prompt_empty", seq=env.seq)
            return  # recorded as applied, nothing to answer
        self._start_turn(state, text, env.seq, applied_ms, out)

    def _start_turn(
        self,
        state: CallState,
        text: str,
        reply_to: int,
        applied_ms: float,
        out: list[tuple[str, Fields]],
    ) -> None:
        """Open a turn for the caller's ``text`` and ask for its reply.

        While an older turn's result is outstanding (it was just cancelled),
        the request waits for it, at most ``REQUEST_WAIT_MS``: the model then
        sees what the caller heard of that turn.
        """
        for t in state.open_turns:
            if not t.superseded:
                t.superseded = True
                self._cancel(state, t, "superseded", out)
        waiting = bool(state.open_turns)
        state.history.append({"role": "user", "content": text})
        state.turn += 1
        state.reply_to = reply_to
        turn = OpenTurn(turn=state.turn, reply_to=reply_to, index=len(state.history))
        state.open_turns.append(turn)
        state.speaking = None
        state.timers.pop(SILENCE, None)
        if waiting:
            turn.requested = False
            state.timers[REQUEST] = int(self.clock() + REQUEST_WAIT_MS)
            log.info("request_waits_for_cancelled_turn", reply_to=reply_to)
            return
        self._request(state, turn, applied_ms, out)

    def _request(
        self, state: CallState, turn: OpenTurn, applied_ms: float, out: list[tuple[str, Fields]]
    ) -> None:
        turn.requested = True
        state.timers.pop(REQUEST, None)
        reply_to = turn.reply_to
        messages = request_messages(state.history)
        request = Envelope(
            kind=Kind.LLM_REQUEST,
            call=state.call,
            session=state.session,
            gateway=state.gateway,
            seq=reply_to,
            turn=state.turn,
            epoch=_epoch(),
            body={"system": self.config.system_prompt, "messages": messages, "reply_to": reply_to},
        )
        # The turn's facts ride in the request's round trip (bus.facts).
        fact: dict[str, Any] = {"call": state.call, "session": state.session, "turn": state.turn}
        fact.update(gateway=state.gateway, seq=reply_to, reply_to=reply_to)
        out.append((self.keys.llm, request.encode()))
        out.append(fact_item(self.keys, "prompt_applied", t_ms=applied_ms, **fact))
        out.append(fact_item(self.keys, "llm_requested", **fact))
        with structlog.contextvars.bound_contextvars(turn=state.turn):
            log.info(
                "prompt_applied",
                seq=reply_to,
                messages=len(messages),
                open_turns=len(state.open_turns),
            )

    def _apply_result(
        self, state: CallState, env: Envelope, now: float, out: list[tuple[str, Fields]]
    ) -> None:
        body = env.body
        turn = next((t for t in state.open_turns if t.turn == env.turn), None)
        if turn is None:
            log.info(
                "llm_result_stale",
                result_turn=env.turn,
                current_turn=state.turn,
                answered_turn=state.answered_turn,
            )
            return
        text = str(body.get("text") or "")
        raw = body.get("messages")
        messages: list[Message]
        if isinstance(raw, list):
            messages = [m for m in raw if isinstance(m, dict)]
        else:
            # A result without "messages": its text is the whole reply.
            messages = [{"role": "assistant", "content": text}] if text else []
        heard: Heard | None = None
        if turn.interrupted:
            heard = locate_heard(
                text, played=turn.played, fragment=turn.fragment, duration_ms=turn.duration_ms
            )
        elif turn.superseded:
            # No interrupt: only tokensPlayed says the caller heard any of it.
            heard = locate_heard(text, played=turn.played)
        kept = truncate_reply(messages, text, heard.text if heard is not None else None)
        state.history[turn.index : turn.index] = kept
        state.open_turns.remove(turn)
        state._shift(turn.index, len(kept))
        state.answered_turn = max(state.answered_turn, turn.turn)
        spoken = heard.text if heard is not None else text
        if not turn.superseded:
            state.speaking = Speaking(
                start=turn.index, count=len(kept), text=spoken, played=turn.played
            )
            tools = {
                str(c.get("name")) for c in body.get("tool_calls") or [] if isinstance(c, dict)
            }
            if tools & {"end_call", "transfer"} and not body.get("cancelled"):
                state.ending = True  # the LLM actor ends the call after the goodbye
            self._arm_silence(state, now, "" if turn.interrupted else text)
        current = state.current()
        if current is not None and not current.requested and len(state.open_turns) == 1:
            # The older turns are settled: ask for the waiting turn's reply.
            self._request(state, current, wall_ms(), out)
        log.info(
            "llm_result_applied",
            chars=len(text),
            kept_chars=len(spoken),
            heard=heard.method if heard is not None else "complete",
            superseded=turn.superseded,
            messages=len(kept),
            cancelled=bool(body.get("cancelled")),
            stop_reason=body.get("stop_reason"),
            error=body.get("error"),
            timings=body.get("timings"),
            usage=body.get("usage"),
        )

    def _apply_interrupt(
        self, state: CallState, env: Envelope, out: list[tuple[str, Fields]]
    ) -> None:
        body = env.body
        fragment = str(body.get("utteranceUntilInterrupt") or "")
        duration = _number(body.get("durationUntilInterruptMs"))
        self._caller_spoke(state)
        current = state.current()
        if current is not None:
            # The reply is still being generated: remember what was heard and
            # stop it; its result is cut when it arrives.
            current.interrupted = True
            current.fragment = fragment
            current.duration_ms = duration
            self._cancel(state, current, "interrupt", out)
            log.info(
                "caller_interrupt",
                seq=env.seq,
                fragment=fragment,
                duration_ms=duration,
                pending_turn=current.turn,
                played=len(current.played),
            )
            return
        spoken = state.speaking
        if spoken is None:
            log.info("caller_interrupt_nothing_playing", seq=env.seq, fragment=fragment)
            return
        heard = locate_heard(
            spoken.text, played=spoken.played, fragment=fragment, duration_ms=duration
        )
        old = state.history[spoken.start : spoken.start + spoken.count]
        new = truncate_reply(old, spoken.text, heard.text)
        state.history[spoken.start : spoken.start + spoken.count] = new
        state._shift(spoken.start + len(old), len(new) - len(old))
        spoken.count = len(new)
        spoken.text = heard.text
        log.info(
            "caller_interrupt",
            seq=env.seq,
            fragment=fragment,
            duration_ms=duration,
            heard=heard.method,
            kept_chars=len(heard.text),
        )

    def _apply_info(self, state: CallState, env: Envelope) -> None:
        name, value = env.body.get("name"), env.body.get("value")
        if name != "tokensPlayed" or not isinstance(value, str):
            log.debug("caller_info", seq=env.seq, name=name, value=value)
            return
        current = state.current()
        if current is not None:
            current.played.append(value)
        elif state.speaking is not None:
            state.speaking.played.append(value)

    def _apply_dtmf(
        self, state: CallState, env: Envelope, now: float, out: list[tuple[str, Fields]]
    ) -> None:
        digit = str(env.body.get("digit", ""))
        self._caller_spoke(state)
        state.session = env.session or state.session
        state.gateway = env.gateway or state.gateway
        if digit == "#":
            entry = state.dtmf_digits or ("#" if "#" in self.config.dtmf_menu else "")
            state.dtmf_digits = ""
            state.timers.pop(DTMF, None)
            log.info("caller_dtmf", seq=env.seq, digit=digit, entry=entry)
            if entry:
                self._start_turn(state, self._dtmf_words(entry), env.seq, wall_ms(), out)
            return
        if digit not in _DTMF_KEYS or len(digit) != 1:
            log.warning("caller_dtmf_unknown", seq=env.seq, digit=digit)
            return
        if len(state.dtmf_digits) < _DTMF_MAX:
            state.dtmf_digits += digit
        state.dtmf_seq = env.seq
        state.timers[DTMF] = int(now + self.config.dtmf_idle_s * 1000)
        log.info("caller_dtmf", seq=env.seq, digit=digit, buffered=len(state.dtmf_digits))

    def _dtmf_words(self, entry: str) -> str:
        """What a keypad entry says: the menu's words for one key, else the keys."""
        menu = self.config.dtmf_menu
        if len(entry) == 1 and entry in menu:
            return menu[entry]
        return "[keypad] " + " ".join(entry)

    def _apply_timer(
        self, state: CallState, env: Envelope, now: float, out: list[tuple[str, Fields]]
    ) -> None:
        name = str(env.body.get("timer", ""))
        deadline = env.body.get("deadline_ms")
        if state.timers.get(name) != deadline:
            # Later input moved or cleared it (or it fired already).
            log.debug("timer_stale", timer=name, deadline_ms=deadline)
            return
        del state.timers[name]
        if state.closed:
            return
        if name == DTMF:
            entry, state.dtmf_digits = state.dtmf_digits, ""
            log.info("dtmf_entry_timeout", entry=entry)
            if entry:
                self._start_turn(state, self._dtmf_words(entry), state.dtmf_seq, wall_ms(), out)
        elif name == SILENCE:
            self._on_silence(state, now, out)
        elif name == REQUEST:
            current = state.current()
            if current is not None and not current.requested:
                log.warning("request_wait_timed_out", reply_to=current.reply_to)
                self._request(state, current, wall_ms(), out)

    def _on_silence(self, state: CallState, now: float, out: list[tuple[str, Fields]]) -> None:
        if state.current() is not None or state.ending:
            return  # a reply is on its way, or the call is ending anyway
        state.reprompts += 1
        if state.reprompts <= self.config.silence_max_reprompts:
            text = self.config.reprompt_text
            self._say(state, text, out)
            self._arm_silence(state, now, text)
            log.info("silence_reprompt", reprompts=state.reprompts)
            return
        text = self.config.goodbye_text
        self._say(state, text, out)
        end = {"type": "end", "handoffData": json.dumps({"reason": "silence"})}
        out.append(self._gateway_send(state, end, after_speech=True))
        state.ending = True
        log.info("silence_hangup", reprompts=state.reprompts - 1)

    def _say(self, state: CallState, text: str, out: list[tuple[str, Fields]]) -> None:
        """Speak ``text`` as one reply and record it as the agent's words."""
        if not text:
            return
        out.append(self._gateway_send(state, {"type": "text", "token": text, "last": True}))
        state.history.append({"role": "assistant", "content": text})
        state.speaking = Speaking(start=len(state.history) - 1, count=1, text=text)

    def _gateway_send(
        self, state: CallState, frame: dict[str, Any], *, after_speech: bool = False
    ) -> tuple[str, Fields]:
        env = Envelope(
            kind=Kind.GATEWAY_SEND,
            call=state.call,
            session=state.session,
            gateway=state.gateway,
            turn=state.turn,
            epoch=_epoch(),
            body={"frame": frame, "after_speech": after_speech, "origin": "conversation"},
        )
        return self.keys.gateway(state.gateway), env.encode()

    def _apply_closed(self, state: CallState, env: Envelope, out: list[tuple[str, Fields]]) -> None:
        state.closed = True
        state.timers.clear()
        state.dtmf_digits = ""
        self._end_open_turns(state, "hangup", out)
        log.info(
            "call_closed",
            code=env.body.get("code"),
            reason=env.body.get("reason", ""),
            turns=state.turn,
        )

    def _end_open_turns(self, state: CallState, reason: str, out: list[tuple[str, Fields]]) -> None:
        """The socket is gone: nobody hears the replies still running."""
        for t in state.open_turns:
            t.superseded = True
            self._cancel(state, t, reason, out)

    def _cancel(
        self, state: CallState, turn: OpenTurn, reason: str, out: list[tuple[str, Fields]]
    ) -> None:
        """Publish ``control.cancel`` for ``turn``'s generation (once per turn)."""
        if turn.cancelled:
            return
        turn.cancelled = True
        env = Envelope(
            kind=Kind.CONTROL_CANCEL,
            call=state.call,
            session=state.session,
            gateway=state.gateway,
            seq=turn.reply_to,
            turn=turn.turn,
            epoch=_epoch(),
            body={"reply_to": turn.reply_to, "reason": reason},
        )
        out.append((self.keys.control, env.encode()))
        log.info(
            "generation_cancel_requested",
            reply_to=turn.reply_to,
            cancel_turn=turn.turn,
            reason=reason,
        )

    def _caller_spoke(self, state: CallState) -> None:
        """Any caller input: the silence count starts over."""
        state.reprompts = 0
        state.timers.pop(SILENCE, None)

    def _arm_silence(self, state: CallState, now: float, spoken: str) -> None:
        """Re-prompt if the caller says nothing once ``spoken`` has played."""
        seconds = self.config.silence_reprompt_s
        if seconds <= 0 or state.closed or state.ending:
            state.timers.pop(SILENCE, None)
            return
        speaking_s = len(spoken) / max(self.config.speech_chars_per_second, 1.0)
        state.timers[SILENCE] = int(now + (seconds + speaking_s) * 1000)

    # -- persistence ---------------------------------------------------------------

    async def _persist(self, state: CallState) -> None:
        key, value, ttl_ms = self.keys.state(state.call), state.to_json(), self.config.state_ttl_ms
        await self._write(key, value, ttl_ms, what="state_write_fenced")

    async def _write(self, key: str, value: str, ttl_ms: int, *, what: str) -> None:
        lease = current_lease()
        if lease is None:
            # Handled outside a partition's lease (direct calls in tools/tests).
            await self.bus.set(key, value, ttl_ms=ttl_ms)
            return
        if not await self.bus.set_if_lease(key, value, lease, ttl_ms=ttl_ms):
            log.warning(what, epoch=lease.epoch, key=key)
            self._cache.drop_lease(lease)  # another worker writes these states now
            await lease_lost()

    async def _sync_timers(self, state: CallState, before: dict[str, int]) -> None:
        """Bring the partition's timer index in line with ``state.timers``."""
        after = state.timers
        if after == before:
            return
        p = partition_of(state.call, self.keys.partitions)
        timers = self._timers.get(p)
        if timers is None:
            # Handled outside a held partition (direct calls): load it once.
            timers = _PartitionTimers.decode(await self.bus.get(self.keys.timers(p)))
            self._timers[p] = timers
        timers.update(state.call, after)
        if all(before.get(name) == d for name, d in after.items()):
            return  # only cleared: a stale deadline in the stored index fires as a no-op
        await self._write(
            self.keys.timers(p),
            timers.encode(),
            self.config.state_ttl_ms,
            what="timer_index_write_fenced",
        )

    # -- the timer task ------------------------------------------------------------

    async def partition_task(
        self, partition: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Fire the timers of ``partition``'s calls while this worker holds it."""
        backoff = Backoff("timer_index_load", actor=self.name, partition=partition)
        while True:
            try:
                raw = await self.bus.get(self.keys.timers(partition))
                break
            except BusError as exc:
                await backoff.failed(exc)
        backoff.succeeded()
        timers = _PartitionTimers.decode(raw)
        self._timers[partition] = timers
        log.debug("timers_loaded", partition=partition, calls=len(timers.index))
        task_status.started()
        try:
            await self._run_timers(partition, timers)
        finally:
            if self._timers.get(partition) is timers:
                del self._timers[partition]
            # Released or lost: the next owner writes these states from now on.
            self._cache.drop_partition(partition)

    async def _run_timers(self, partition: int, timers: _PartitionTimers) -> None:
        stream = self.keys.calls(partition)
        backoff = Backoff("timer_fire", actor=self.name, partition=partition)
        while True:
            timers.changed = trio.Event()
            due_at = timers.earliest()
            if due_at is None:
                await timers.changed.wait()
                continue
            delay = (due_at - self.clock()) / 1000
            if delay > 0:
                with trio.move_on_after(delay):
                    await timers.changed.wait()
                if timers.changed.is_set():
                    continue
            # Everything due by the instant we slept to (not re-reading the
            # clock: the sleep is the authority, also under a test clock).
            due = timers.pop_due(due_at)
            items = [
                (
                    stream,
                    Envelope(
                        kind=TIMER_KIND,
                        call=call,
                        epoch=_epoch(),
                        body={"timer": name, "deadline_ms": deadline},
                    ).encode(),
                )
                for call, name, deadline in due
            ]
            try:
                await self.bus.append_many(items)
            except BusError as exc:
                for call, name, deadline in due:
                    merged = {**timers.index.get(call, {})}
                    merged.setdefault(name, deadline)
                    timers.index[call] = merged
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            log.debug("timers_fired", partition=partition, count=len(due))


def _number(value: Any) -> float | None:
    """Twilio's ``durationUntilInterruptMs``: a number, or (older docs) a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _epoch() -> int:
    """The fencing epoch of the partition being handled (0 outside one)."""
    lease = current_lease()
    return lease.epoch if lease is not None else 0


__all__ = [
    "TIMER_KIND",
    "CallState",
    "ConversationActor",
    "OpenTurn",
    "Speaking",
]
