"""Requests that carry only what is new: the LLM worker rebuilds the rest.

The requests and states here are made by the conversation's own turn rules
(``actors.conversation.apply``), then put on a ``MemoryBus`` the way the
conversation worker puts them: the state first, the request after. The
scripted provider's reply counts the caller's messages it was sent ("That
was message N from you"), so a reply shows which history the model saw.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from functools import partial

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from actors.config import ConversationConfig, LLMConfig
from actors.conversation import CallState, Incoming, Outbound, apply
from actors.conversation.state import SETTLE
from actors.history import request_messages
from actors.llm import APOLOGY, LLMActor
from actors.llm.history import HistoryCache, covered, resolve_in_order
from actors.providers import ScriptedProvider
from actors.runtime import serve_actor
from bus.base import MalformedEntry
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.memory import MemoryBus
from bus.messages import (
    CallPrompt,
    CallSetup,
    ConversationTimer,
    HistoryMessage,
    HistoryRef,
    LlmRequest,
    LlmResult,
    envelope,
    history_digest,
)
from switchboard.roles import build_actor
from switchboard.settings import Settings
from switchboard.testing import FaultyBus

KEYS = Keys(namespace="lh", partitions=4)
CALL = "CA00000000000000000000000000000077"
SESSION = "VX00000000000000000000000000000077"


def user(text: str) -> HistoryMessage:
    return {"role": "user", "content": text}


def agent(text: str) -> HistoryMessage:
    return {"role": "assistant", "content": text}


@dataclass
class Conversation:
    """One call driven through the conversation's rules; each request with the
    state persisted with it."""

    config: ConversationConfig = field(
        default_factory=lambda: ConversationConfig(
            keys=KEYS, system_prompt="Be brief.", welcome_greeting="Hello.", silence_reprompt_s=0
        )
    )
    state: CallState | None = None
    seq: int = 0
    asked: list[tuple[Envelope, str]] = field(default_factory=list)  # request, state JSON

    def feed(self, message: object, turn: int = 0) -> list[Outbound]:
        self.seq += 1
        incoming = Incoming(message, CALL, SESSION, "gw1", seq=self.seq, turn=turn)  # type: ignore[arg-type]
        applied = apply(self.state, incoming, config=self.config, now=0.0, wall_ms=0.0)
        self.state = applied.state or self.state
        assert self.state is not None
        out = [e for e in applied.effects if isinstance(e, Outbound)]
        for o in out:
            if isinstance(o.message, LlmRequest):
                env = envelope(
                    o.message, call=CALL, session=SESSION, gateway="gw1", seq=o.seq, turn=o.turn
                )
                self.asked.append((env, self.state.to_json()))
        return out

    def turn(self, said: str, reply: str) -> None:
        if self.state is None:
            self.feed(CallSetup(session_id=SESSION, call_sid=CALL))
        out = self.feed(CallPrompt(said, "en-US", True))
        (request,) = [o for o in out if isinstance(o.message, LlmRequest)]
        assert isinstance(request.message, LlmRequest) and request.message.reply_to is not None
        self.feed(LlmResult(text=reply, reply_to=request.message.reply_to), turn=request.turn)


def config(**overrides: object) -> LLMConfig:
    return replace(LLMConfig(keys=KEYS), **overrides)  # type: ignore[arg-type]


async def next_result(bus: MemoryBus | FaultyBus, after: str = "0") -> tuple[str, Envelope]:
    """The next ``llm.result`` on the call's partition stream (blocking reads)."""
    while True:
        for entry in await bus.read(KEYS.calls_for(CALL), after, block_ms=1000):
            after = entry.id
            env = Envelope.decode(entry.fields)
            if env.kind == Kind.LLM_RESULT:
                return entry.id, env


async def spoken(bus: MemoryBus | FaultyBus) -> str:
    entries = [Envelope.decode(e.fields) for e in await bus.range(KEYS.gateway("gw1"))]
    return "".join(e.body["text"] for e in entries if e.kind == Kind.LLM_TOKENS)


# -- the reference on the wire ---------------------------------------------------


def test_a_request_with_a_reference_round_trips_and_a_bad_one_is_a_typed_error() -> None:
    ref = HistoryRef(start=3, count=2, digest=history_digest([user("a"), agent("b")]), n=4)
    request = LlmRequest(system="s", messages=[user("c")], reply_to=9, history=ref)
    assert LlmRequest.from_body(request.to_body()) == request
    # Written before references existed: no "history", the whole conversation.
    old = LlmRequest.from_body({"system": "s", "messages": [user("c")], "reply_to": 9})
    assert old.history is None and list(old.messages) == [user("c")]
    for bad in ({"start": -1, "count": 0, "digest": "x", "n": 1}, {"start": 0}, "0:2"):
        with pytest.raises(MalformedEntry, match=r"llm\.request"):
            LlmRequest.from_body({"system": "s", "messages": [], "history": bad})


def test_the_digest_is_of_the_exact_messages_whatever_the_key_order() -> None:
    a = history_digest([{"role": "user", "content": "hi"}])
    assert a == history_digest([{"content": "hi", "role": "user"}])  # type: ignore[typeddict-item]
    assert a != history_digest([user("hi ")]) and a != history_digest([agent("hi")])


def test_a_copy_that_does_not_match_the_digest_is_never_used() -> None:
    history = [agent("Hello."), user("one"), agent("answer one")]
    ref = HistoryRef(start=10, count=2, digest=history_digest(history[1:]), n=3)
    # Numbered from the call's first message: the same messages at another
    # number are not the referenced ones, nor is a copy one word off.
    assert covered(9, history, ref) == history[1:]
    assert covered(10, history, ref) is None
    assert covered(9, [agent("Hello."), user("one"), agent("answer 1")], ref) is None
    cache = HistoryCache(max_calls=1)
    cache.remember(CALL, 9, history)
    request = LlmRequest(system="s", messages=[user("two")], history=ref)
    assert cache.rebuild(CALL, request) == [*history[1:], user("two")]
    assert cache.rebuild("CA-other", request) is None


# -- bytes per turn ----------------------------------------------------------------


def request_bytes(env: Envelope) -> int:
    return sum(len(k) + len(v.encode()) for k, v in env.encode().items())


def test_request_bytes_per_turn_no_longer_grow_with_the_turn_number() -> None:
    call = Conversation()
    for n in range(1, 31):
        call.turn(" ".join(["word"] * 49 + [f"question {n}?"]), " ".join(["answer"] * 60))
    requests = [env for env, _ in call.asked]
    # What a request carried when it held the whole history (the growth, reproduced).
    whole = [
        request_bytes(replace(env, body={**env.body, "messages": asked, "history": None}))
        for env, asked in zip(
            requests,
            resolve_in_order((CALL, LlmRequest.from_body(e.body)) for e in requests),
            strict=True,
        )
        if asked is not None
    ]
    assert len(whole) == 30
    grows = [b - a for a, b in itertools.pairwise(whole)]
    assert whole[29] > 20 * whole[0] and min(grows) > 600  # every turn re-sends the ones before
    # Now: each request carries one reply and one prompt, whatever the turn.
    now = [request_bytes(env) for env in requests]
    assert max(now[1:]) - min(now[1:]) < 40  # the turn number's digits, nothing more
    assert now[29] < whole[29] / 20
    # And the worker rebuilt exactly what the conversation holds.
    assert call.state is not None
    rebuilt = resolve_in_order((CALL, LlmRequest.from_body(e.body)) for e in requests)[-1]
    assert rebuilt == request_messages(call.state.history[:-1])


# -- the LLM worker ------------------------------------------------------------------


def three_turns() -> Conversation:
    call = Conversation()
    call.turn("one", "answer one")
    call.turn("two", "answer two")
    call.turn("three", "answer three")
    return call


async def test_a_worker_that_saw_the_previous_request_reads_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = three_turns()
    bus = MemoryBus()
    actor = LLMActor(config(), ScriptedProvider())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-a"))
            after = "0"
            for env, _ in call.asked:  # no state written at all
                await bus.append(KEYS.llm_for(CALL), env.encode())
                after, result = await next_result(bus, after)
                assert result.body["error"] is None
            nursery.cancel_scope.cancel()
    assert result.body["text"] == "You said: three. That was message 3 from you."
    assert (actor.histories.hits, actor.histories.misses) == (3, 0)


async def test_a_worker_without_the_previous_request_rebuilds_from_the_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = three_turns()
    bus = MemoryBus()
    env, state = call.asked[2]
    await bus.set(KEYS.state(CALL), state)
    actor = LLMActor(config(), ScriptedProvider())
    with trio.fail_after(30), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-b"))
            await bus.append(KEYS.llm_for(CALL), env.encode())
            _, result = await next_result(bus)
            nursery.cancel_scope.cancel()
    assert result.body["text"] == "You said: three. That was message 3 from you."
    assert (actor.histories.hits, actor.histories.misses) == (0, 1)
    assert [e["reads"] for e in logs if e["event"] == "request_history_from_state"] == [1]


async def test_a_state_not_yet_written_is_waited_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = three_turns()
    bus = FaultyBus(MemoryBus())
    env, state = call.asked[2]
    _, older = call.asked[1]
    await bus.set(KEYS.state(CALL), older)  # the request before this one's state
    actor = LLMActor(config(), ScriptedProvider())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-b"))
            read = bus.completed("get")
            await bus.append(KEYS.llm_for(CALL), env.encode())
            await read.wait()  # it read the older state...
            await bus.set(KEYS.state(CALL), state)  # ...which is then written
            _, result = await next_result(bus)
            nursery.cancel_scope.cancel()
    assert result.body["error"] is None
    assert result.body["text"] == "You said: three. That was message 3 from you."
    assert (actor.histories.misses, actor.histories.stale) == (1, 0)


async def test_a_request_whose_state_never_comes_is_stale_and_gets_no_reply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = three_turns()
    bus = FaultyBus(MemoryBus())
    env, _ = call.asked[2]
    _, older = call.asked[1]
    await bus.set(KEYS.state(CALL), older)
    actor = LLMActor(config(history_wait_s=2.0), ScriptedProvider())
    with trio.fail_after(30), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-b"))
            acked = bus.completed("ack")
            await bus.append(KEYS.llm_for(CALL), env.encode())
            await acked.wait()
            nursery.cancel_scope.cancel()
    assert actor.histories.stale == 1
    stale = [e for e in logs if e["event"] == "request_stale_history"]
    assert len(stale) == 1 and "state at request 2" in stale[0]["error"]
    # Nothing said, no result: the conversation's re-applied request answers.
    assert await spoken(bus) == ""
    assert [e for e in await bus.range(KEYS.calls_for(CALL))] == []


async def test_a_state_that_does_not_hold_the_history_fails_with_the_apology(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = three_turns()
    bus = MemoryBus()
    env, state = call.asked[2]
    # The state is as new as the request, but its history is not what the
    # request refers to (one reply differs).
    tampered = CallState.from_json(state)
    tampered.history[2] = agent("something else")
    await bus.set(KEYS.state(CALL), tampered.to_json())
    actor = LLMActor(config(), ScriptedProvider())
    with trio.fail_after(30), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-b"))
            await bus.append(KEYS.llm_for(CALL), env.encode())
            _, result = await next_result(bus)
            nursery.cancel_scope.cancel()
    assert result.body["error"].startswith("history mismatch")
    assert result.body["text"] == APOLOGY
    assert await spoken(bus) == APOLOGY  # never a reply to a guessed history
    assert actor.histories.mismatches == 1
    assert [e["log_level"] for e in logs if e["event"] == "request_history_mismatch"] == ["error"]


async def test_a_request_cancelled_before_it_started_keeps_the_copy_in_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = three_turns()
    bus = MemoryBus()
    (first, _), (second, _), (third, _) = call.asked
    actor = LLMActor(config(), ScriptedProvider())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_actor, bus, actor, consumer="llm-a"))
            await bus.append(KEYS.llm_for(CALL), first.encode())
            after, _ = await next_result(bus)
            # The caller interrupted before the second request was taken.
            actor.cancel(CALL, SESSION, second.body["reply_to"], "interrupt")
            await bus.append(KEYS.llm_for(CALL), second.encode())
            after, cancelled = await next_result(bus, after)
            await bus.append(KEYS.llm_for(CALL), third.encode())
            _, result = await next_result(bus, after)
            nursery.cancel_scope.cancel()
    assert cancelled.body["cancelled"] is True
    assert result.body["text"] == "You said: three. That was message 3 from you."
    assert actor.histories.misses == 0  # no state was written, none was needed


def test_the_outcomes_are_on_the_llm_workers_metrics() -> None:
    registry = CollectorRegistry()
    actor = build_actor(
        Settings.from_env({"SWITCHBOARD_LLM_PROVIDER": "scripted"}), "llm", registry
    )
    assert isinstance(actor, LLMActor)
    h = actor.histories
    h.hits, h.misses, h.stale, h.mismatches = 7, 4, 1, 1
    read = {
        o: registry.get_sample_value("switchboard_llm_history", {"outcome": o})
        for o in ("memory", "state", "stale", "mismatch")
    }
    assert read == {"memory": 7.0, "state": 2.0, "stale": 1.0, "mismatch": 1.0}


def test_preemptive_requests_carry_only_what_is_new_and_keep_the_chain() -> None:
    config = ConversationConfig(
        keys=KEYS, system_prompt="Be brief.", silence_reprompt_s=0, preemptive=True, settle_ms=150
    )
    call = Conversation(config=config)
    call.turn("one", "answer one")

    def speculate(words: str) -> Envelope:
        call.feed(CallPrompt(words, "en-US", False))
        assert call.state is not None
        call.feed(ConversationTimer(SETTLE, call.state.timers[SETTLE]))
        env, _ = call.asked[-1]
        assert env.body["held"] is True
        return env

    speculate("A table for two")
    call.turn("A table for three", "answer three")  # other words: a new request
    adopted = speculate("At eight")
    call.feed(CallPrompt("At eight", "en-US", True))  # adopted: no request
    assert adopted.body["reply_to"] is not None
    call.feed(LlmResult(text="answer eight", reply_to=adopted.body["reply_to"]), turn=3)
    call.turn("Thanks", "answer thanks")
    requests = [env for env, _ in call.asked]
    assert [r.body.get("held", False) for r in requests] == [False, True, False, True, False]
    # Each one, the preemptive ones too, refers to what the one before carried.
    assert all(r.body["history"]["count"] > 0 for r in requests[1:])
    asked = resolve_in_order((CALL, LlmRequest.from_body(r.body)) for r in requests)
    assert all(a is not None for a in asked)  # a worker that saw them all reads nothing
    spoken = [[m["content"] for m in a if m["role"] == "user"] for a in asked if a is not None]
    assert spoken[1] == ["one", "A table for two"]
    assert spoken[2] == ["one", "A table for three"]  # the interim words never entered history
    assert spoken[4] == ["one", "A table for three", "At eight", "Thanks"]
