"""The conversation actor: applies caller events and LLM results to a call.

It reads the partition streams (``keys.calls(p)``), where the gateway puts
caller events and the LLM actor puts finished replies, so both arrive in one
order per call. It is a partitioned actor: each worker reads only the
partitions whose lease it holds (``actors.partitions``). The call's state
lives in the bus key/value store at ``keys.state(call)`` as JSON
(``CallState``), so another process can take a partition over and carry on.

Idempotency: the state records the id of the last entry applied
(``last_entry_id``); an entry at or below it is a redelivery and is skipped.
The order of effects for a final prompt is publish-then-persist: if the
process dies in between, the prompt is delivered again, produces the same
``llm.request`` (same turn, same ``reply_to``), and downstream de-duplicates.

Fencing: the state is written with ``bus.set_if_lease`` under the partition's
lease, and requests carry the lease's ``epoch``. A refused write means another
worker owns the partition now: ``lease_lost()`` stops this one at once,
without acking, so a stalled old owner can never overwrite the new owner's
state.

Trust: caller speech only ever becomes a ``user`` message. The system prompt
comes from the configuration alone, never from anything a caller said.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from actors.config import ConversationConfig
from actors.runtime import Actor, current_lease, lease_lost
from bus.base import Entry, parse_id
from bus.envelope import Envelope, Kind
from bus.facts import fact_item, wall_ms
from bus.keys import GROUP_CONVERSATION

log = structlog.get_logger()


@dataclass(slots=True)
class CallState:
    """Everything the conversation knows about one call (persisted as JSON)."""

    call: str
    session: str = ""
    gateway: str = ""
    turn: int = 0
    history: list[dict[str, str]] = field(default_factory=list)
    last_entry_id: str = ""
    # The ``seq`` of the prompt the current turn answers (its ``reply_to``).
    reply_to: int = 0
    # The last turn whose ``llm.result`` was applied: a second result for the
    # same turn (an LLM request delivered twice) must not append twice.
    answered_turn: int = 0
    closed: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> CallState:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            call=str(data["call"]),
            session=str(data.get("session", "")),
            gateway=str(data.get("gateway", "")),
            turn=int(data.get("turn", 0)),
            history=[
                {"role": str(m["role"]), "content": str(m["content"])}
                for m in data.get("history", [])
            ],
            last_entry_id=str(data.get("last_entry_id", "")),
            reply_to=int(data.get("reply_to", 0)),
            answered_turn=int(data.get("answered_turn", 0)),
            closed=bool(data.get("closed", False)),
        )


class ConversationActor(Actor):
    """Keeps each call's history and asks the LLM actor for every reply."""

    name = "conversation"
    group = GROUP_CONVERSATION
    concurrency = 1  # per-call order: a call lives on one partition stream
    partitioned = True  # one owner per partition, by lease

    def __init__(self, config: ConversationConfig) -> None:
        self.config = config
        self.keys = config.keys

    def streams(self) -> Sequence[str]:
        return self.keys.all_calls()

    async def load_state(self, call: str) -> CallState | None:
        """The stored state of ``call``, or None when it has none."""
        raw = await self.bus.get(self.keys.state(call))
        return CallState.from_json(raw) if raw is not None else None

    async def handle(self, env: Envelope, entry: Entry) -> None:
        state = await self.load_state(env.call)
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
            return
        if env.kind == Kind.CALL_SETUP:
            state = self._apply_setup(state, env)
        elif env.kind == Kind.CALL_PROMPT:
            state = state or self._new_state(env)
            if not await self._apply_prompt(state, env, entry):
                # Interim prompt: nothing changed, nothing to persist.
                return
        elif env.kind == Kind.LLM_RESULT:
            if state is None:
                log.warning("llm_result_without_call", entry_id=entry.id)
                return
            self._apply_result(state, env)
        elif env.kind == Kind.CALL_CLOSED:
            if state is None:
                log.info("call_closed_without_state", entry_id=entry.id)
                return
            state.closed = True
            log.info(
                "call_closed",
                code=env.body.get("code"),
                reason=env.body.get("reason", ""),
                turns=state.turn,
            )
        elif env.kind in (Kind.CALL_DTMF, Kind.CALL_INTERRUPT, Kind.CALL_INFO, Kind.CALL_ERROR):
            if state is None:
                state = self._new_state(env)
            self._log_caller_event(env)
        else:
            log.warning("unexpected_kind", kind=env.kind, entry_id=entry.id)
            return
        state.last_entry_id = entry.id
        await self._persist(state)

    def _new_state(self, env: Envelope) -> CallState:
        return CallState(call=env.call, session=env.session, gateway=env.gateway)

    def _apply_setup(self, state: CallState | None, env: Envelope) -> CallState:
        resumed = state is not None
        if state is None:
            state = self._new_state(env)
        else:
            # A new session of a known call (e.g. after a handoff): same
            # history, new socket, maybe a different gateway.
            state.session = env.session
            state.gateway = env.gateway
            state.closed = False
        greeting = self.config.welcome_greeting
        if greeting and not state.history:
            state.history.append({"role": "assistant", "content": greeting})
        log.info(
            "call_setup",
            session=env.session,
            gateway=env.gateway,
            resumed=resumed,
            messages=len(state.history),
            greeting=bool(greeting),
        )
        return state

    async def _apply_prompt(self, state: CallState, env: Envelope, entry: Entry) -> bool:
        """Apply a prompt; False when it is an interim one (ignored)."""
        if env.body.get("last", True) is not True:
            return False
        applied_ms = wall_ms()
        text = str(env.body.get("voicePrompt", "")).strip()
        if not text:
            log.info("prompt_empty", seq=env.seq)
            return True  # recorded as applied, nothing to answer
        history = state.history
        if history and history[-1]["role"] == "user":
            # The previous prompt never got its reply (interrupted, failed):
            # the caller's words belong to one user turn.
            history[-1] = {"role": "user", "content": f"{history[-1]['content']} {text}"}
        else:
            history.append({"role": "user", "content": text})
        state.turn += 1
        state.reply_to = env.seq
        # The prompt's envelope names the live session and its gateway.
        state.session = env.session or state.session
        state.gateway = env.gateway or state.gateway
        request = Envelope(
            kind=Kind.LLM_REQUEST,
            call=state.call,
            session=state.session,
            gateway=state.gateway,
            seq=env.seq,
            turn=state.turn,
            epoch=_epoch(),
            body={
                "system": self.config.system_prompt,
                "messages": [dict(m) for m in history],
                "reply_to": env.seq,
            },
        )
        # The turn's facts ride in the request's round trip (bus.facts).
        fact: dict[str, Any] = {"call": state.call, "session": state.session, "turn": state.turn}
        fact.update(gateway=state.gateway, seq=env.seq, reply_to=env.seq)
        request_id, *_ = await self.bus.append_many(
            [
                (self.keys.llm, request.encode()),
                fact_item(self.keys, "prompt_applied", t_ms=applied_ms, **fact),
                fact_item(self.keys, "llm_requested", **fact),
            ]
        )
        with structlog.contextvars.bound_contextvars(turn=state.turn):
            log.info(
                "prompt_applied",
                seq=env.seq,
                chars=len(text),
                messages=len(history),
                request_id=request_id,
            )
        return True

    def _apply_result(self, state: CallState, env: Envelope) -> None:
        text = str(env.body.get("text") or "")
        if env.turn != state.turn or state.answered_turn >= env.turn:
            log.info(
                "llm_result_stale",
                result_turn=env.turn,
                current_turn=state.turn,
                answered_turn=state.answered_turn,
            )
            return
        state.answered_turn = env.turn
        if text:
            state.history.append({"role": "assistant", "content": text})
        log.info(
            "llm_result_applied",
            chars=len(text),
            stop_reason=env.body.get("stop_reason"),
            error=env.body.get("error"),
            timings=env.body.get("timings"),
            usage=env.body.get("usage"),
        )

    def _log_caller_event(self, env: Envelope) -> None:
        body = env.body
        if env.kind == Kind.CALL_DTMF:
            log.info("caller_dtmf", seq=env.seq, digit=body.get("digit"))
        elif env.kind == Kind.CALL_INTERRUPT:
            log.info(
                "caller_interrupt",
                seq=env.seq,
                heard=body.get("utteranceUntilInterrupt"),
                duration_ms=body.get("durationUntilInterruptMs"),
            )
        elif env.kind == Kind.CALL_INFO:
            log.info("caller_info", seq=env.seq, name=body.get("name"), value=body.get("value"))
        else:
            log.warning("caller_error", seq=env.seq, description=body.get("description"))

    async def _persist(self, state: CallState) -> None:
        key, value, ttl_ms = self.keys.state(state.call), state.to_json(), self.config.state_ttl_ms
        lease = current_lease()
        if lease is None:
            # Handled outside a partition's lease (direct calls in tools/tests).
            await self.bus.set(key, value, ttl_ms=ttl_ms)
            return
        if not await self.bus.set_if_lease(key, value, lease, ttl_ms=ttl_ms):
            log.warning("state_write_fenced", epoch=lease.epoch, entry_id=state.last_entry_id)
            await lease_lost()


def _epoch() -> int:
    """The fencing epoch of the partition being handled (0 outside one)."""
    lease = current_lease()
    return lease.epoch if lease is not None else 0
