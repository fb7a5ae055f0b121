"""Preemptive replies, clause by clause (``actors.conversation.speculation``).

Pure: the rules get the entries the gateway, the timer task and the LLM actor
would put on the call's partition stream, with the time passed in; each test
checks the state and what the rules ask to publish.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from actors.config import ConversationConfig
from actors.conversation import CallState, Effect, FactOut, Incoming, Outbound, apply
from actors.conversation.speculation import normalise
from actors.conversation.state import SETTLE
from bus.messages import (
    BusMessage,
    CallClosed,
    CallDtmf,
    CallInterrupt,
    CallPrompt,
    CallSetup,
    ControlAdopt,
    ControlCancel,
    ConversationTimer,
    GatewayAdopt,
    LlmRequest,
    LlmResult,
    Usage,
)

CALL = "CA00000000000000000000000000000011"
SESSION = "VX00000000000000000000000000000011"
REPLY = "A table for two at eight, then."


@dataclass
class Call:
    config: ConversationConfig = field(
        default_factory=lambda: ConversationConfig(
            system_prompt="Test.", silence_reprompt_s=0, preemptive=True, settle_ms=150
        )
    )
    state: CallState | None = None
    session: str = SESSION
    seq: int = 0
    now: float = 1_000_000.0

    def feed(self, message: BusMessage, *, turn: int = 0, session: str = "") -> list[Effect]:
        self.seq += 1
        incoming = Incoming(
            message,
            CALL,
            session or self.session,
            "gw1",
            seq=self.seq,
            turn=turn,
            ts=int(self.now),  # written as it is applied: no lag
        )
        applied = apply(self.state, incoming, config=self.config, now=self.now, wall_ms=self.now)
        if applied.state is not None:
            self.state = applied.state
        return applied.effects

    def setup(self) -> list[Effect]:
        return self.feed(CallSetup(session_id=self.session, call_sid=CALL))

    def partial(self, text: str) -> list[Effect]:
        return self.feed(CallPrompt(voice_prompt=text, lang="en-US", last=False))

    def final(self, text: str) -> list[Effect]:
        return self.feed(CallPrompt(voice_prompt=text, lang="en-US", last=True))

    def settle(self) -> list[Effect]:
        assert self.state is not None
        deadline = self.state.timers[SETTLE]
        self.now = deadline
        return self.feed(ConversationTimer(SETTLE, deadline))

    def result(
        self, reply_to: int, text: str = REPLY, *, turn: int = 0, **kw: object
    ) -> list[Effect]:
        return self.feed(LlmResult(text=text, reply_to=reply_to, **kw), turn=turn)  # type: ignore[arg-type]

    @property
    def live(self) -> CallState:
        assert self.state is not None
        return self.state


M = TypeVar("M", LlmRequest, ControlCancel, ControlAdopt, GatewayAdopt)


def sent(effects: list[Effect], kind: type[M]) -> list[M]:
    return [e.message for e in effects if isinstance(e, Outbound) and isinstance(e.message, kind)]


def facts(effects: list[Effect], name: str) -> list[FactOut]:
    return [e for e in effects if isinstance(e, FactOut) and e.name == name]


def speculating(text: str = "A table for two") -> tuple[Call, LlmRequest]:
    call = Call()
    call.setup()
    call.partial(text)
    (request,) = sent(call.settle(), LlmRequest)
    return call, request


def test_words_are_compared_without_case_punctuation_or_spacing() -> None:
    assert normalise("  A table, for TWO! ") == normalise("a table for two.") == "a table for two"
    assert normalise("for twos") != normalise("for two")


def test_a_stable_interim_prompt_starts_a_held_request_with_its_words() -> None:
    call = Call()
    call.setup()
    effects = call.partial("A table for two")
    assert not sent(effects, LlmRequest)  # not before the settle time
    assert call.live.timers[SETTLE] == call.now + call.config.settle_ms
    seq = call.seq
    effects = call.settle()
    (request,) = sent(effects, LlmRequest)
    assert request.held and request.reply_to == seq
    assert request.messages[-1] == {"role": "user", "content": "A table for two"}
    assert not call.live.history  # nothing recorded until the final prompt
    assert [f.fields["reply_to"] for f in facts(effects, "speculation_started")] == [seq]


def test_an_unchanged_interim_prompt_changes_nothing() -> None:
    call = Call()
    call.setup()
    call.partial("A table")
    before = call.live.to_json()
    assert call.partial("a table.") == []
    assert call.live.to_json() == before


def test_without_a_settle_time_the_speculation_starts_on_the_interim_prompt() -> None:
    call = Call(config=ConversationConfig(system_prompt="Test.", preemptive=True, settle_ms=0))
    call.setup()
    (request,) = sent(call.partial("A table for two"), LlmRequest)
    assert request.held and request.reply_to == call.seq
    assert SETTLE not in call.live.timers  # no timer entry, no timer index write
    effects = call.partial("A table for two please")
    assert [c.reason for c in sent(effects, ControlCancel)] == ["extended"]
    assert [r.reply_to for r in sent(effects, LlmRequest)] == [call.seq]


def test_off_interim_prompts_are_dropped_as_before() -> None:
    call = Call(config=ConversationConfig(system_prompt="Test.", silence_reprompt_s=0))
    call.setup()
    before = call.live.to_json()
    assert call.partial("A table for two") == []
    assert call.live.to_json() == before and SETTLE not in call.live.timers


def test_an_identical_final_adopts_the_speculation() -> None:
    call, request = speculating()
    effects = call.final("A table for two.")
    assert not sent(effects, LlmRequest)  # no second request: the held one answers
    (adopt,) = sent(effects, GatewayAdopt)
    (control,) = sent(effects, ControlAdopt)
    assert (adopt.reply_to, adopt.seq) == (request.reply_to, call.seq)
    assert (control.reply_to, control.seq) == (request.reply_to, call.seq)
    assert call.live.history == [{"role": "user", "content": "A table for two."}]
    (turn,) = call.live.open_turns
    assert turn.speculative and turn.reply_to == request.reply_to
    assert [f.fields["reply_to"] for f in facts(effects, "prompt_applied")] == [call.seq]
    # The held reply's result is the turn's answer.
    assert request.reply_to is not None
    call.result(request.reply_to, turn=turn.turn)
    assert call.live.history[-1] == {"role": "assistant", "content": REPLY}
    assert not call.live.open_turns


def test_a_result_that_came_before_the_final_is_applied_on_adoption() -> None:
    call, request = speculating()
    assert request.reply_to is not None
    assert call.result(request.reply_to) == []  # kept with the speculation
    assert call.live.history == []
    call.final("a table for two")
    assert call.live.history == [
        {"role": "user", "content": "a table for two"},
        {"role": "assistant", "content": REPLY},
    ]
    assert not call.live.open_turns


def test_a_different_final_cancels_the_speculation_and_asks_again() -> None:
    call, request = speculating("A table for twos")
    effects = call.final("A table for two.")
    (cancel,) = sent(effects, ControlCancel)
    assert (cancel.reply_to, cancel.reason) == (request.reply_to, "mismatch")
    (fresh,) = sent(effects, LlmRequest)
    assert not fresh.held and fresh.reply_to == call.seq
    assert not sent(effects, GatewayAdopt)
    # Its result is counted as waste and changes nothing.
    assert request.reply_to is not None
    before = list(call.live.history)
    wasted = call.result(request.reply_to, usage=Usage(output_tokens=9), cancelled=True)
    assert [f.fields["output_tokens"] for f in facts(wasted, "speculation_wasted")] == [9]
    assert call.live.history == before and len(call.live.open_turns) == 1


def test_a_changed_interim_prompt_cancels_the_running_speculation() -> None:
    call, request = speculating("A table for two")
    effects = call.partial("A table for ten")
    (cancel,) = sent(effects, ControlCancel)
    assert (cancel.reply_to, cancel.reason) == (request.reply_to, "changed")
    assert call.live.speculation is None and call.live.speculations == 1
    # The caller only going on is not a revision: not counted.
    call.settle()
    effects = call.partial("A table for ten please")
    assert [c.reason for c in sent(effects, ControlCancel)] == ["extended"]
    assert call.live.speculations == 1


def test_at_most_the_limit_of_revised_speculations_per_utterance() -> None:
    call = Call()
    call.setup()
    for text in ("one", "two", "three"):
        call.partial(text)
        assert sent(call.settle(), LlmRequest)
    call.partial("four")
    assert SETTLE not in call.live.timers and call.live.speculations == 3
    # The next utterance has its own budget.
    call.final("four")
    call.result(call.seq, turn=call.live.turn)
    call.partial("five")
    assert sent(call.settle(), LlmRequest)


def test_no_speculation_for_a_long_utterance() -> None:
    call = Call()
    call.setup()
    call.partial("word " * 100)
    assert SETTLE not in call.live.timers


def test_no_speculation_while_a_reply_is_still_being_generated() -> None:
    call = Call()
    call.setup()
    call.final("What time is it?")
    call.partial("And the date")
    assert SETTLE not in call.live.timers


def test_interrupt_keys_and_hangup_cancel_the_speculation() -> None:
    for act, reason in (
        (lambda c: c.feed(CallInterrupt("", 0)), "interrupt"),
        (lambda c: c.feed(CallDtmf("5")), "keypad"),
        (lambda c: c.feed(CallClosed(code=1000)), "hangup"),
        (lambda c: c.feed(CallSetup(session_id="VX2", call_sid=CALL), session="VX2"), "hangup"),
    ):
        call, request = speculating()
        effects = act(call)
        (cancel,) = [c for c in sent(effects, ControlCancel) if c.reply_to == request.reply_to]
        assert cancel.reason == reason
        assert call.live.speculation is None and SETTLE not in call.live.timers
        assert not sent(call.final("A table for two"), GatewayAdopt)


def test_the_state_with_a_speculation_survives_a_round_trip() -> None:
    call, request = speculating()
    assert request.reply_to is not None
    call.result(request.reply_to)
    assert CallState.from_json(call.live.to_json()) == call.live


def test_the_default_settle_time_is_the_issues_150_ms() -> None:
    assert ConversationConfig(system_prompt="Test.").settle_ms == 150


def test_a_withdrawn_final_prompt_cuts_the_adopted_reply_it_was_answered_with() -> None:
    # The gateway withdraws by the final prompt's seq (it apologised for
    # that prompt); an adopted turn answers it under the interim's seq.
    call, request = speculating()
    call.final("A table for two.")
    final_seq = call.seq
    assert request.reply_to is not None and request.reply_to != final_seq
    effects = call.feed(CallInterrupt("", 0, withdrawn=final_seq))
    assert sent(effects, ControlCancel) == [
        ControlCancel(reply_to=request.reply_to, reason="withdrawn")
    ]
    call.result(request.reply_to, turn=call.live.turn, cancelled=True)
    assert call.live.history == [{"role": "user", "content": "A table for two."}]
    # After its result was applied, too.
    call, request = speculating()
    call.final("A table for two.")
    final_seq = call.seq
    assert request.reply_to is not None
    call.result(request.reply_to, turn=call.live.turn)
    assert call.live.history[-1] == {"role": "assistant", "content": REPLY}
    call.feed(CallInterrupt("", 0, withdrawn=final_seq))
    assert call.live.history == [{"role": "user", "content": "A table for two."}]
