"""The turn rules as pure functions: a state and one message in, effects out.

No bus, no clock, no Trio: each test feeds ``actors.conversation.apply`` the
messages the gateway, the LLM actor and the timer task would put on the
call's partition stream, with the time passed in, and checks the state and
the messages the rules ask to publish. ``test_conversation_turns.py`` checks
the same rules through the actor on a bus.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from actors.config import ConversationConfig
from actors.conversation import CallState, Effect, FactOut, Incoming, Outbound, apply
from actors.conversation.state import DTMF, REQUEST, REQUEST_WAIT_MS, SILENCE
from actors.history import request_messages
from actors.llm.history import HistoryCache
from bus.messages import (
    BusMessage,
    CallClosed,
    CallDtmf,
    CallInfo,
    CallInterrupt,
    CallPrompt,
    CallSetup,
    ControlCancel,
    ConversationTimer,
    GatewaySend,
    HistoryMessage,
    HistoryRef,
    LlmRequest,
    LlmResult,
    history_digest,
)

CALL = "CA00000000000000000000000000000009"
SESSION = "VX00000000000000000000000000000009"
GREETING = "Hello, how can I help?"
REPLY = "We open at nine in the morning, and we close at ten at night."


@dataclass
class Call:
    """One call's state driven through the rules, as its partition stream would."""

    config: ConversationConfig = field(
        default_factory=lambda: ConversationConfig(
            system_prompt="Test agent.", welcome_greeting=GREETING, silence_reprompt_s=0
        )
    )
    state: CallState | None = None
    session: str = SESSION
    seq: int = 0
    now: float = 1_000_000.0

    # Every request asked for, in order, with the messages an LLM worker that
    # took them all would rebuild (requests carry only what is new).
    requests: list[tuple[LlmRequest, list[HistoryMessage]]] = field(default_factory=list)
    worker: HistoryCache = field(default_factory=lambda: HistoryCache(max_calls=1))

    def feed(self, message: BusMessage, *, turn: int = 0) -> list[Effect]:
        """Apply one entry; the effects it asks for."""
        self.seq += 1
        incoming = Incoming(message, CALL, self.session, "gw1", seq=self.seq, turn=turn)
        applied = apply(self.state, incoming, config=self.config, now=self.now, wall_ms=self.now)
        if applied.state is not None:
            self.state = applied.state
        for request, _ in sent(applied.effects, LlmRequest):
            whole = self.worker.rebuild(CALL, request)
            assert whole is not None and request.history is not None
            self.worker.remember(CALL, request.history.start, whole)
            # Exactly the history the conversation holds as it asks.
            assert self.state is not None and whole == self.state.history
            self.requests.append((request, request_messages(whole)))
        return applied.effects

    def asked(self, request: LlmRequest) -> list[HistoryMessage]:
        """What the model is sent for ``request``."""
        return next(m for r, m in self.requests if r is request)

    def setup(self) -> list[Effect]:
        return self.feed(CallSetup(session_id=self.session, call_sid=CALL))

    def say(self, text: str, *, last: bool = True) -> list[Effect]:
        return self.feed(CallPrompt(voice_prompt=text, lang="en-US", last=last))

    def played(self, text: str) -> list[Effect]:
        return self.feed(CallInfo(name="tokensPlayed", value=text))

    def interrupt(self, fragment: str, duration_ms: float = 0) -> list[Effect]:
        return self.feed(CallInterrupt(fragment, duration_ms))

    def withdrawn(self, reply_to: int) -> list[Effect]:
        """The gateway apologised for prompt ``reply_to`` and withdrew its reply."""
        return self.feed(CallInterrupt(withdrawn=reply_to))

    def dtmf(self, digit: str) -> list[Effect]:
        return self.feed(CallDtmf(digit))

    def result(self, request: Outbound, text: str, *, cancelled: bool = False) -> list[Effect]:
        """The LLM actor's result for ``request``, on the request's turn."""
        assert isinstance(request.message, LlmRequest) and request.message.reply_to is not None
        result = LlmResult(text=text, reply_to=request.message.reply_to, cancelled=cancelled)
        return self.feed(result, turn=request.turn)

    def fire(self, timer: str) -> list[Effect]:
        """The timer task's entry for ``timer`` at its deadline, the clock moved there."""
        assert self.state is not None
        deadline = self.state.timers[timer]
        self.now = deadline
        return self.feed(ConversationTimer(timer, deadline))

    def closed(self) -> list[Effect]:
        return self.feed(CallClosed(code=1000))

    @property
    def history(self) -> list[dict[str, Any]]:
        assert self.state is not None
        return self.state.history


M = TypeVar("M", LlmRequest, ControlCancel, GatewaySend)


def sent(effects: list[Effect], kind: type[M]) -> list[tuple[M, Outbound]]:
    """The messages of type ``kind`` among ``effects``, each with what carries it."""
    return [
        (e.message, e) for e in effects if isinstance(e, Outbound) and isinstance(e.message, kind)
    ]


def one(effects: list[Effect], kind: type[M]) -> tuple[M, Outbound]:
    (found,) = sent(effects, kind)
    return found


def user(text: str) -> HistoryMessage:
    return {"role": "user", "content": text}


def agent(text: str) -> HistoryMessage:
    return {"role": "assistant", "content": text}


def test_a_prompt_opens_a_turn_and_asks_for_its_reply_with_the_whole_history() -> None:
    call = Call()
    assert call.setup() == []
    effects = call.say("  When are you open? ")
    request, out = one(effects, LlmRequest)
    assert (request.system, request.reply_to) == ("Test agent.", 2)
    assert call.asked(request) == [agent(GREETING), user("When are you open?")]
    # The call's first request refers to nothing: it carries its history.
    assert request.history == HistoryRef(start=0, count=0, digest=history_digest([]), n=1)
    assert request.messages == [agent(GREETING), user("When are you open?")]
    assert (out.call, out.session, out.gateway, out.seq, out.turn) == (CALL, SESSION, "gw1", 2, 1)
    facts = [e for e in effects if isinstance(e, FactOut)]
    assert [f.name for f in facts] == ["prompt_applied", "llm_requested"]
    assert facts[0].t_ms == call.now and facts[0].fields == {"reply_to": 2}
    assert facts[1].t_ms is None  # stamped when published
    assert call.result(out, REPLY) == []
    assert call.history[-1] == agent(REPLY)


def test_an_interim_prompt_changes_nothing() -> None:
    call = Call()
    call.setup()
    before = call.state
    assert call.say("When are", last=False) == []
    assert call.state is before and call.history == [agent(GREETING)]


def test_barge_in_before_the_result_cancels_and_cuts_the_result_to_what_was_heard() -> None:
    call = Call()
    call.setup()
    _, request = one(call.say("When are you open?"), LlmRequest)
    call.played("We open at nine")
    cancel, out = one(call.interrupt("in the", 500), ControlCancel)
    assert cancel == ControlCancel(reply_to=2, reason="interrupt")
    assert (out.session, out.seq, out.turn) == (SESSION, 2, 1)
    # The cancelled generation reports all it streamed; history keeps what was heard.
    assert call.result(request, REPLY, cancelled=True) == []
    assert call.history[-1] == agent("We open at nine in the")


def test_barge_in_after_the_result_cuts_the_reply_in_history_without_a_cancel() -> None:
    call = Call()
    call.setup()
    _, request = one(call.say("When are you open?"), LlmRequest)
    call.result(request, REPLY)
    # Only the playing chunk's fragment, in other case and punctuation.
    assert call.interrupt("MORNING, and we", 700) == []
    assert call.history[-1] == agent("We open at nine in the morning, and we")


def test_barge_in_with_only_a_duration_cuts_at_the_configured_speaking_rate() -> None:
    config = ConversationConfig(welcome_greeting=GREETING, speech_chars_per_second=10.0)
    call = Call(config=config)
    call.setup()
    _, request = one(call.say("When?"), LlmRequest)
    call.result(request, REPLY)
    call.interrupt("", 1500)  # 15 characters at 10 a second, cut at a word
    assert call.history[-1] == agent("We open at nine")


def test_barge_in_during_the_greeting_cuts_the_greeting() -> None:
    call = Call()
    call.setup()
    call.interrupt("Hello,", 300)
    assert call.history == [agent("Hello")]


def test_a_reply_withdrawn_before_its_result_is_cancelled_and_kept_out_of_history() -> None:
    call = Call()
    call.setup()
    _, request = one(call.say("When are you open?"), LlmRequest)
    cancel, _ = one(call.withdrawn(2), ControlCancel)
    assert cancel == ControlCancel(reply_to=2, reason="withdrawn")
    assert call.result(request, REPLY) == []
    # Never heard: history keeps none of it, and the caller's repeat is
    # answered as words the agent has not answered yet.
    assert call.history == [agent(GREETING), user("When are you open?")]
    repeat, _ = one(call.say("When are you open?"), LlmRequest)
    assert REPLY not in str(call.asked(repeat))


def test_a_reply_withdrawn_after_its_result_is_taken_out_of_history() -> None:
    call = Call()
    call.setup()
    _, request = one(call.say("When are you open?"), LlmRequest)
    call.result(request, REPLY)
    assert call.withdrawn(2) == []
    assert call.history == [agent(GREETING), user("When are you open?")]
    # The model is not told it answered: the repeat's request has no REPLY.
    repeat, _ = one(call.say("When are you open?"), LlmRequest)
    assert REPLY not in str(call.asked(repeat))


def test_a_withdrawal_touches_only_the_reply_to_its_prompt() -> None:
    call = Call()
    call.setup()
    _, first = one(call.say("When are you open?"), LlmRequest)
    call.result(first, REPLY)
    _, second = one(call.say("And where?"), LlmRequest)
    # For an older prompt (its reply was heard): nothing changes, no cancel.
    assert call.withdrawn(2) == []
    call.result(second, "On Main Street.")
    assert call.history[-3:] == [agent(REPLY), user("And where?"), agent("On Main Street.")]


def test_a_new_prompt_supersedes_the_open_turn_and_its_request_waits_for_the_result() -> None:
    call = Call()
    call.setup()
    _, first = one(call.say("When are you open?"), LlmRequest)
    call.played("We open at nine")
    effects = call.say("Actually, where are you?")
    cancel, out = one(effects, ControlCancel)
    assert cancel == ControlCancel(reply_to=2, reason="superseded") and out.turn == 1
    assert sent(effects, LlmRequest) == []  # waits for the first turn's result
    assert call.state is not None and call.state.timers[REQUEST] == call.now + REQUEST_WAIT_MS
    # The superseded reply is cut to its tokensPlayed; then the waiting turn is asked.
    second, out = one(call.result(first, REPLY, cancelled=True), LlmRequest)
    assert (out.turn, second.reply_to) == (2, 4)
    assert call.asked(second)[1:] == [
        user("When are you open?"),
        agent("We open at nine"),
        user("Actually, where are you?"),
    ]
    assert REQUEST not in call.state.timers


def test_a_superseded_reply_nobody_heard_leaves_nothing_and_the_request_merges_prompts() -> None:
    call = Call()
    call.setup()
    _, first = one(call.say("When are you open?"), LlmRequest)
    call.say("And where?")
    second, _ = one(call.result(first, REPLY, cancelled=True), LlmRequest)
    assert call.asked(second)[1:] == [user("When are you open? And where?")]


def test_the_request_wait_times_out_and_asks_anyway() -> None:
    call = Call()
    call.setup()
    call.say("When are you open?")
    call.say("And where?")
    request, out = one(call.fire(REQUEST), LlmRequest)
    assert (out.turn, request.reply_to) == (2, 3)


def test_dtmf_keys_are_buffered_until_hash_and_become_the_callers_words() -> None:
    call = Call()
    call.setup()
    assert call.dtmf("4") == [] and call.dtmf("2") == []
    assert call.state is not None and call.state.dtmf_digits == "42"
    request, _ = one(call.dtmf("#"), LlmRequest)
    assert request.reply_to == 4  # the '#'
    assert call.history[-1] == user("[keypad] 4 2")
    assert call.state.dtmf_digits == "" and DTMF not in call.state.timers


def test_dtmf_idle_timer_ends_the_entry_answering_the_last_key() -> None:
    call = Call()
    call.setup()
    call.dtmf("7")
    assert call.state is not None
    assert call.state.timers[DTMF] == call.now + call.config.dtmf_idle_s * 1000
    call.dtmf("*")
    request, _ = one(call.fire(DTMF), LlmRequest)
    assert request.reply_to == 3  # the last key's seq
    assert call.history[-1] == user("[keypad] 7 *")


def test_a_one_key_menu_entry_becomes_its_words_and_unknown_keys_are_ignored() -> None:
    menu = {"1": "I want to talk about billing", "#": "Repeat the menu"}
    call = Call(config=ConversationConfig(welcome_greeting=GREETING, dtmf_menu=menu))
    call.setup()
    assert call.dtmf("x") == []
    call.dtmf("1")
    _, request = one(call.dtmf("#"), LlmRequest)
    assert call.history[-1] == user("I want to talk about billing")
    call.result(request, "Sure.")
    one(call.dtmf("#"), LlmRequest)  # '#' alone is a menu key here
    assert call.history[-1] == user("Repeat the menu")


def test_keys_pressed_before_speaking_join_what_the_caller_says() -> None:
    call = Call()
    call.setup()
    call.dtmf("3")
    one(call.say("is my floor"), LlmRequest)
    assert call.history[-1] == user("[keypad] 3 is my floor")


def silent_call(max_reprompts: int = 1) -> Call:
    config = ConversationConfig(
        welcome_greeting=GREETING,
        silence_reprompt_s=5,
        silence_max_reprompts=max_reprompts,
        reprompt_text="Still there?",
        goodbye_text="Goodbye!",
        speech_chars_per_second=10.0,
    )
    return Call(config=config)


def test_silence_reprompts_after_the_greeting_has_played() -> None:
    call = silent_call()
    call.setup()
    assert call.state is not None
    # 5 s of silence counted from the end of the greeting (22 chars at 10/s).
    assert call.state.timers[SILENCE] == call.now + 5000 + len(GREETING) * 100
    send, _ = one(call.fire(SILENCE), GatewaySend)
    assert send == GatewaySend(
        frame={"type": "text", "token": "Still there?", "last": True}, origin="conversation"
    )
    assert call.history[-1] == agent("Still there?")
    assert call.state.timers[SILENCE] == call.now + 5000 + len("Still there?") * 100


def test_silence_after_the_last_reprompt_says_goodbye_and_ends_after_speech() -> None:
    call = silent_call(max_reprompts=1)
    call.setup()
    call.fire(SILENCE)
    (goodbye, _), (end, _) = sent(call.fire(SILENCE), GatewaySend)
    # The call's last words go out uninterruptible: end follows once heard.
    assert goodbye.frame == {
        "type": "text",
        "token": "Goodbye!",
        "last": True,
        "interruptible": False,
    }
    assert end == GatewaySend(
        frame={"type": "end", "handoffData": '{"reason": "silence"}'},
        after_speech=True,
        origin="conversation",
    )
    assert call.state is not None and call.state.ending and SILENCE not in call.state.timers


def test_the_request_carries_when_the_gateway_received_the_prompt() -> None:
    call = Call()
    call.setup()
    prompt = CallPrompt(voice_prompt="Hours?", lang="en-US", last=True)
    incoming = Incoming(prompt, CALL, SESSION, "gw1", seq=7, ts=1_700_000_000_123)
    applied = apply(call.state, incoming, config=call.config, now=call.now, wall_ms=call.now)
    request, _ = one(applied.effects, LlmRequest)
    assert request.prompt_ms == 1_700_000_000_123
    assert LlmRequest.from_body(request.to_body()) == request
    # Unknown (0): left out, the request's own stamp stands in.
    fresh = Call()
    fresh.setup()
    other, _ = one(fresh.say("More?"), LlmRequest)
    assert other.prompt_ms is None and "prompt_ms" not in other.to_body()


def test_the_prompts_language_reaches_the_call_state() -> None:
    call = Call()
    call.setup()
    assert call.state is not None and call.state.lang == ""
    call.feed(CallPrompt(voice_prompt="Hola", lang="es-ES", last=True))
    assert call.state.lang == "es-ES"
    # An interim prompt changes nothing; a prompt without lang keeps the last.
    call.feed(CallPrompt(voice_prompt="Hello", lang="en-US", last=False))
    call.feed(CallPrompt(voice_prompt="Gracias", lang="", last=True))
    assert call.state.lang == "es-ES"
    restored = CallState.from_json(call.state.to_json())
    assert restored.lang == "es-ES"


def test_the_profile_can_let_the_caller_interrupt_the_goodbye() -> None:
    call = silent_call(max_reprompts=0)
    call.config = replace(call.config, goodbye_interruptible=True)
    call.setup()
    (goodbye, _), _ = sent(call.fire(SILENCE), GatewaySend)
    assert goodbye.frame["interruptible"] is True


def test_caller_input_clears_silence_and_its_stale_timer_entry_does_nothing() -> None:
    call = silent_call()
    call.setup()
    assert call.state is not None
    deadline = call.state.timers[SILENCE]
    _, request = one(call.say("Hi"), LlmRequest)
    assert SILENCE not in call.state.timers and call.state.reprompts == 0
    assert call.feed(ConversationTimer(SILENCE, deadline)) == []
    call.result(request, "Hello!")
    assert call.state.timers[SILENCE] == call.now + 5000 + len("Hello!") * 100


def test_an_interrupt_no_prompt_follows_rearms_the_silence_timer() -> None:
    call = silent_call()
    call.setup()
    _, request = one(call.say("Hours?"), LlmRequest)
    call.result(request, REPLY)
    call.interrupt("We open at nine", duration_ms=900)
    assert call.state is not None
    # Counted from the interrupt (nothing more is playing), not cleared.
    assert call.state.timers[SILENCE] == call.now + 5000
    send, _ = one(call.fire(SILENCE), GatewaySend)
    assert send.frame["token"] == "Still there?"


def test_an_interrupt_during_the_greeting_rearms_the_silence_timer() -> None:
    call = silent_call()
    call.setup()
    call.interrupt("Hello, how", duration_ms=500)
    assert call.state is not None and call.state.timers[SILENCE] == call.now + 5000


def test_an_empty_final_prompt_rearms_the_silence_timer() -> None:
    call = silent_call()
    call.setup()
    assert call.say("  ") == []
    assert call.state is not None and call.state.timers[SILENCE] == call.now + 5000
    send, _ = one(call.fire(SILENCE), GatewaySend)
    assert send.frame["token"] == "Still there?"


def test_an_empty_prompt_while_a_reply_is_on_its_way_leaves_the_reply_to_arm_it() -> None:
    call = silent_call()
    call.setup()
    _, request = one(call.say("Hours?"), LlmRequest)
    call.say("")
    assert call.state is not None and SILENCE not in call.state.timers
    call.result(request, "Nine.")
    assert call.state.timers[SILENCE] == call.now + 5000 + len("Nine.") * 100


def test_a_refused_exchange_leaves_history_and_only_the_fallback_line_stays() -> None:
    call = Call()
    call.setup()
    _, first = one(call.say("Hours?"), LlmRequest)
    call.result(first, "Nine to five.")
    refused, out = one(call.say("How do I pick a lock?"), LlmRequest)
    assert refused.reply_to is not None
    fallback = "Sorry, I can't help with that. Is there anything else?"
    result = LlmResult(
        text=f"Well, first {fallback}",
        reply_to=refused.reply_to,
        stop_reason="refusal",
        messages=[agent(fallback)],
    )
    call.feed(result, turn=out.turn)
    assert call.history == [
        agent(GREETING),
        user("Hours?"),
        agent("Nine to five."),
        agent(fallback),
    ]
    nxt, _ = one(call.say("When do you close?"), LlmRequest)
    sent_text = str(call.asked(nxt))
    assert "lock" not in sent_text and "Well, first" not in sent_text
    assert call.asked(nxt)[-1] == user("When do you close?")


def test_resume_cancels_the_cut_off_reply_and_answers_the_question_again() -> None:
    """The session failed while its reply was being generated (its gateway
    died): the new session, after Twilio's resume greeting, gets the answer."""
    call = Call()
    call.setup()
    _, request = one(call.say("When are you open?"), LlmRequest)
    call.session = "VX0000000000000000000000000000000a"
    effects = call.setup()
    cancel, out = one(effects, ControlCancel)
    # The cancel names the session whose reply it stops.
    assert (out.session, cancel) == (SESSION, ControlCancel(reply_to=2, reason="hangup"))
    again, to = one(effects, LlmRequest)
    # For the new session, answering its setup: its fence admits the reply.
    assert (to.session, again.reply_to) == (call.session, call.seq)
    assert call.asked(again)[-1] == user("When are you open?")
    assert call.state is not None and call.state.session == call.session
    # The old reply arrives later: nobody heard it, so it adds nothing.
    call.result(request, REPLY, cancelled=True)
    call.result(to, REPLY)
    assert call.history == [agent(GREETING), user("When are you open?"), agent(REPLY)]


def test_a_reply_cut_off_while_being_spoken_is_said_again_one_heard_is_not() -> None:
    call = Call()
    call.setup()
    _, request = one(call.say("When are you open?"), LlmRequest)
    call.result(request, REPLY)
    call.now += 1000  # the gateway died one second into the reply's speech
    call.session = "VX0000000000000000000000000000000a"
    again, _ = one(call.setup(), LlmRequest)
    assert call.asked(again)[-1] == user("When are you open?")
    assert call.history[-1] == user("When are you open?")  # the cut-off reply left

    heard = Call()
    heard.setup()
    _, request = one(heard.say("When are you open?"), LlmRequest)
    heard.result(request, REPLY)
    heard.feed(CallInfo(name="agentSpeaking", value="off"))  # spoken to the end
    heard.session = "VX0000000000000000000000000000000a"
    assert sent(heard.setup(), LlmRequest) == []
    assert heard.history[-1] == agent(heard.config.resume_greeting)

    long_ago = Call()
    long_ago.setup()
    _, request = one(long_ago.say("When are you open?"), LlmRequest)
    long_ago.result(request, REPLY)
    long_ago.now += 60_000  # long enough to have been spoken, and a resume taken
    long_ago.session = "VX0000000000000000000000000000000a"
    assert sent(long_ago.setup(), LlmRequest) == []


def test_a_closed_call_cancels_its_open_turn_once_and_answers_nothing_after() -> None:
    call = silent_call()
    call.setup()
    call.say("When are you open?")
    cancel, _ = one(call.closed(), ControlCancel)
    assert cancel.reason == "hangup"
    assert call.state is not None and call.state.closed and call.state.timers == {}
    assert sent(call.setup(), ControlCancel) == []  # already cancelled


def test_a_result_or_timer_for_an_unknown_call_changes_nothing() -> None:
    call = Call()
    assert call.feed(LlmResult(text="x", reply_to=1), turn=1) == []
    assert call.feed(ConversationTimer(SILENCE, 1)) == []
    assert call.state is None


def capped_call(**caps: int) -> Call:
    config = ConversationConfig(
        system_prompt="Test agent.", welcome_greeting=GREETING, silence_reprompt_s=0, **caps
    )
    return Call(config=config)


def capped(effects: list[Effect]) -> list[FactOut]:
    return [e for e in effects if isinstance(e, FactOut) and e.name == "state_capped"]


def test_a_flood_of_tokens_played_is_capped_counted_and_the_cut_still_found() -> None:
    # The break: every tokensPlayed value was kept, without limit, and the
    # next interrupt matched all of them.
    call = capped_call(max_played_chars=1000)
    call.setup()
    _, out = one(call.say("When are you open?"), LlmRequest)
    facts: list[FactOut] = []
    for _ in range(2000):
        facts += capped(call.played("x" * 700))
    facts += capped(call.played("We open at nine"))
    assert call.state is not None
    current = call.state.current()
    assert current is not None
    assert sum(len(p) for p in current.played) <= 1000
    assert call.state.dropped["played_chunks"] == 2000 - 1
    assert sum(f.fields["played_chunks"] for f in facts) == 2000 - 1
    assert facts[-1].fields["total"] == {"played_chunks": 2000 - 1}
    call.interrupt("")
    call.result(out, REPLY, cancelled=True)
    assert call.history[-1] == agent("We open at nine")
    # The count is kept with the state.
    assert CallState.from_json(call.state.to_json()).dropped == {"played_chunks": 1999}


def test_history_keeps_the_newest_messages_under_the_caps() -> None:
    call = capped_call(max_history_messages=6)
    call.setup()
    for n in range(10):
        _, out = one(call.say(f"question {n}"), LlmRequest)
        call.result(out, f"answer {n}")
    assert call.history == [
        user("question 7"),
        agent("answer 7"),
        user("question 8"),
        agent("answer 8"),
        user("question 9"),
        agent("answer 9"),
    ]
    assert call.state is not None and call.state.dropped == {"history_messages": 15}
    # The next request carries only what the caps keep.
    request, _ = one(call.say("question 10"), LlmRequest)
    asked = call.asked(request)
    assert len(asked) == 6 and asked[0] == agent("answer 7")
    # Numbered from the call's first message: 15 dropped before, one more now.
    assert request.history is not None and request.history.start == 16


def test_history_cap_never_drops_a_message_a_turn_points_at_nor_half_a_tool_pair() -> None:
    call = capped_call(max_history_chars=150)
    call.setup()
    _, out = one(call.say("q" * 30), LlmRequest)
    tool_use = {"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}
    tool_result = {"type": "tool_result", "tool_use_id": "t1", "content": "ok"}
    messages: list[HistoryMessage] = [
        {"role": "assistant", "content": [tool_use]},
        {"role": "user", "content": [tool_result]},
        agent("done"),
    ]
    assert isinstance(out.message, LlmRequest) and out.message.reply_to is not None
    call.feed(
        LlmResult(text="done", reply_to=out.message.reply_to, messages=messages), turn=out.turn
    )
    # A long prompt: the older messages go, the tool pair together.
    request, _ = one(call.say("p" * 60), LlmRequest)
    assert call.history == [agent("done"), user("p" * 60)]
    assert call.asked(request) == [agent("done"), user("p" * 60)]


def test_keys_past_the_entry_limit_are_dropped_and_counted() -> None:
    call = Call()
    call.setup()
    facts: list[FactOut] = []
    for _ in range(100):
        facts += capped(call.dtmf("1"))
    assert call.state is not None
    assert len(call.state.dtmf_digits) == 64
    assert call.state.dropped == {"dtmf_digits": 36}
    assert sum(f.fields["dtmf_digits"] for f in facts) == 36
