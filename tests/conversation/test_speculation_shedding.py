"""Load shedding of preemptive replies: a bus that is behind starts no speculation.

Pure: the conversation's rules (``actors.conversation.speculation``) with
each entry's written time (``ts``) and the time it is applied passed in, and
the LLM actor's rule for a held request a worker takes late
(``actors.llm.shed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from actors.config import ConversationConfig
from actors.conversation import CallState, Effect, FactOut, Incoming, Outbound, apply
from actors.conversation.state import SETTLE
from actors.llm.shed import Taken, shed_lag
from actors.telemetry_speculation import Speculations
from bus.messages import (
    BusMessage,
    CallPrompt,
    CallSetup,
    ControlAdopt,
    ControlCancel,
    ConversationTimer,
    Fact,
    LlmRequest,
    LlmResult,
)

CALL = "CA00000000000000000000000000000012"
SESSION = "VX00000000000000000000000000000012"
WORDS = "A table for two"
LIMIT = 120.0

T = TypeVar("T")


@dataclass
class Call:
    settle_ms: float = 0.0
    max_lag_ms: float = LIMIT
    state: CallState | None = None
    seq: int = 0
    now: float = 1_000_000.0
    config: ConversationConfig = field(init=False)

    def __post_init__(self) -> None:
        self.config = ConversationConfig(
            system_prompt="Test.",
            silence_reprompt_s=0,
            preemptive=True,
            settle_ms=self.settle_ms,
            speculation_max_lag_ms=self.max_lag_ms,
        )

    def feed(self, message: BusMessage, *, lag_ms: float = 0.0, turn: int = 0) -> list[Effect]:
        """``message`` applied now, written ``lag_ms`` earlier."""
        self.seq += 1
        incoming = Incoming(
            message, CALL, SESSION, "gw1", seq=self.seq, turn=turn, ts=int(self.now - lag_ms)
        )
        applied = apply(self.state, incoming, config=self.config, now=self.now, wall_ms=self.now)
        if applied.state is not None:
            self.state = applied.state
        return applied.effects

    def partial(self, text: str = WORDS, *, lag_ms: float = 0.0) -> list[Effect]:
        return self.feed(CallPrompt(voice_prompt=text, lang="en-US", last=False), lag_ms=lag_ms)

    def final(self, text: str = WORDS) -> list[Effect]:
        return self.feed(CallPrompt(voice_prompt=text, lang="en-US", last=True))

    @property
    def live(self) -> CallState:
        assert self.state is not None
        return self.state

    def ready(self) -> Call:
        self.feed(CallSetup(session_id=SESSION, call_sid=CALL))
        return self


def sent(effects: list[Effect], kind: type[T]) -> list[T]:
    return [e.message for e in effects if isinstance(e, Outbound) and isinstance(e.message, kind)]


def facts(effects: list[Effect], name: str) -> list[FactOut]:
    return [e for e in effects if isinstance(e, FactOut) and e.name == name]


def test_an_interim_prompt_applied_past_the_lag_limit_starts_no_speculation() -> None:
    call = Call().ready()
    effects = call.partial(lag_ms=LIMIT + 80)
    assert not sent(effects, LlmRequest)
    assert call.live.speculation is None
    (shed,) = facts(effects, "speculation_shed")
    assert shed.fields == {"reply_to": 2, "reason": "partial_lag", "lag_ms": 200}
    assert not facts(effects, "speculation_started")
    # The final prompt is answered as usual: one request, not held, no cancel.
    effects = call.final()
    (request,) = sent(effects, LlmRequest)
    assert not request.held and request.reply_to == 3
    assert not sent(effects, ControlCancel) and not sent(effects, ControlAdopt)


def test_an_interim_prompt_within_the_limit_speculates() -> None:
    call = Call().ready()
    (request,) = sent(call.partial(lag_ms=LIMIT), LlmRequest)
    assert request.held
    # Nor does a limit of 0 ever shed.
    call = Call(max_lag_ms=0).ready()
    assert sent(call.partial(lag_ms=60_000), LlmRequest)


def test_the_next_interim_prompt_on_time_speculates_again() -> None:
    call = Call().ready()
    call.partial("A table", lag_ms=500)
    (request,) = sent(call.partial(WORDS), LlmRequest)
    assert request.held and request.reply_to == 3
    # A shed one is not counted against the utterance's speculations.
    assert call.live.speculations == 1


def test_a_settle_timer_applied_late_starts_no_speculation() -> None:
    call = Call(settle_ms=150).ready()
    call.partial()
    deadline = call.live.timers[SETTLE]
    call.now = deadline + LIMIT + 1
    effects = call.feed(ConversationTimer(SETTLE, deadline))
    assert not sent(effects, LlmRequest)
    (shed,) = facts(effects, "speculation_shed")
    assert shed.fields["reason"] == "settle_lag"
    # On time, it does.
    call = Call(settle_ms=150).ready()
    call.partial()
    deadline = call.live.timers[SETTLE]
    call.now = deadline
    assert sent(call.feed(ConversationTimer(SETTLE, deadline)), LlmRequest)


def test_a_speculation_its_worker_shed_is_forgotten_and_the_final_answered() -> None:
    call = Call().ready()
    call.partial()  # seq 2: the held request
    shed = LlmResult(text="", reply_to=2, cancelled=True, shed=True)
    effects = call.feed(shed)
    assert call.live.speculation is None and not effects
    # The LLM workers are behind: no more speculation in this utterance.
    assert not sent(call.partial(f"{WORDS} at eight"), LlmRequest)
    effects = call.final(f"{WORDS} at eight")
    (request,) = sent(effects, LlmRequest)
    assert not request.held and request.reply_to == 5
    # The next utterance may speculate again.
    call.feed(LlmResult(text="Booked.", reply_to=5), turn=call.live.turn)
    assert sent(call.partial("Thanks"), LlmRequest)
    assert not sent(effects, ControlAdopt)


def test_an_adopted_speculation_its_worker_shed_is_asked_for_again_unheld() -> None:
    call = Call().ready()
    call.partial()  # seq 2
    assert sent(call.final(), ControlAdopt)  # seq 3 adopts it
    effects = call.feed(LlmResult(text="", reply_to=2, cancelled=True, shed=True))
    (request,) = sent(effects, LlmRequest)
    assert not request.held and request.reply_to == 2
    # Its real reply then answers the turn.
    call.feed(LlmResult(text="Eight o'clock?", reply_to=2))
    assert not call.live.open_turns
    assert call.live.history[-1] == {"role": "assistant", "content": "Eight o'clock?"}


def taken(**kw: object) -> Taken:
    base: dict[str, object] = {
        "held": True,
        "written_ms": 1_000.0,
        "now_ms": 1_000.0 + LIMIT + 1,
        "adopted": False,
    }
    return Taken(**{**base, **kw})  # type: ignore[arg-type]


def test_the_llm_worker_sheds_a_late_held_request() -> None:
    assert shed_lag(taken(), limit_ms=LIMIT) == LIMIT + 1


def test_the_llm_worker_runs_what_must_run() -> None:
    assert shed_lag(taken(now_ms=1_000.0 + LIMIT), limit_ms=LIMIT) is None  # on time
    assert shed_lag(taken(held=False), limit_ms=LIMIT) is None  # the caller's turn
    assert shed_lag(taken(adopted=True), limit_ms=LIMIT) is None  # now the caller's turn
    assert shed_lag(taken(deliveries=2), limit_ms=LIMIT) is None  # a failover goes on
    assert shed_lag(taken(streamed=True), limit_ms=LIMIT) is None  # part of it is held
    assert shed_lag(taken(written_ms=0.0), limit_ms=LIMIT) is None  # when: not known
    assert shed_lag(taken(), limit_ms=0) is None  # shedding off


def test_telemetry_counts_a_shed_speculation_and_joins_no_turn_to_it() -> None:
    specs = Speculations()
    fact = Fact(name="speculation_shed", t_ms=1.0, fields={"reply_to": 2, "reason": "queue_lag"})
    assert specs.apply(SESSION, fact) == ((SESSION, 2), None)
    assert specs.fields()["speculations_shed"] == 1
    assert specs.turn_of((SESSION, 2)) is None
