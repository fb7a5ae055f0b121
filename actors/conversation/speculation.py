"""Preemptive replies: a reply started on an interim prompt, held until the final one.

With partial prompts on (Twilio's ``partialPrompts``), the caller's words come
as interim prompts (``last: false``, the whole utterance so far) about every
250 ms, and the final prompt some 500 ms after the last of them, most often
with the same words. The contract, all pure:

1. **Record.** An interim prompt whose normalised text (case, whitespace and
   punctuation ignored: :func:`normalise`) differs from the last one's is
   recorded (text, seq) and arms the ``settle`` timer (``settle_ms``, 150 ms by
   default; 0: the speculation starts at once, with no timer entry). An
   unchanged one changes nothing (and is not persisted). A changed one
   first cancels the running speculation (``control.cancel``, reason
   ``changed``): at most one runs per call.
2. **Speculate.** When ``settle`` fires on the same text, a held
   ``llm.request`` goes out: ``reply_to`` the interim prompt's seq,
   ``held: true``, the history plus the interim words as the user message.
   Not when: preemptive replies are off, a turn is open (a reply is still
   being generated), keys are buffered (they join the final words), the
   utterance is longer than ``speculation_max_chars``, or
   ``max_speculations`` already started in this utterance.
3. **Adopt or discard.** On the final prompt, a speculation of this session
   whose normalised text equals the final's is *adopted*: the turn opens
   under the speculation's ``reply_to`` (``OpenTurn.speculative``), history
   records the final words as the user message (and, when it comes, the
   held reply as their answer), and ``gateway.adopt {reply_to, seq}`` goes
   to the gateway (which releases the held tokens at once) and
   ``control.adopt`` to the LLM workers (a held reply's tools run only
   after it). Otherwise it is cancelled (reason ``mismatch``) and the
   final prompt is answered as usual. An interrupt, a key, the session
   closing and a resumed session cancel it too (``interrupt``, ``keypad``,
   ``hangup``).
4. **Its result.** A speculation's ``llm.result`` that arrives before the
   final prompt is kept with it and applied on adoption; one for an adopted
   turn is applied as any turn's; one for a discarded speculation is
   counted (``speculation_wasted``) and otherwise ignored. A speculation
   cancelled before it produced any text gets no result at all (the LLM
   actor writes only its facts): its entry in ``discarded`` ages out.

Facts (``bus/facts.py``; for telemetry and the bench), all from the
conversation: ``speculation_started`` (``reply_to``: the interim prompt's
seq; ``chars``), ``speculation_adopted`` (``reply_to``: the final prompt's
seq; ``speculation``: the interim one's), ``speculation_discarded``
(``reply_to``: the interim seq; ``reason``), ``speculation_wasted``
(``reply_to``: the interim seq; ``output_tokens``, ``input_tokens``: what
the discarded reply cost). The LLM actor marks a held reply's
``completion_done`` with ``held: true``; the gateway reports an adopted
reply's ``first_token_sent`` under the final prompt's seq.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import structlog

from actors.conversation.delta import request_history
from actors.conversation.effects import FactOut, Step
from actors.conversation.state import (
    SETTLE,
    SILENCE,
    CallState,
    OpenTurn,
    Speculation,
)
from actors.conversation.turns import apply_result, request
from bus.messages import (
    CallPrompt,
    ControlAdopt,
    ControlCancel,
    GatewayAdopt,
    LlmRequest,
    LlmResult,
)

log = structlog.get_logger()

# Discarded speculations whose results are still awaited, per call.
_DISCARDED_KEPT = 8


def normalise(text: str) -> str:
    """``text`` as compared for adoption: case, punctuation and spacing ignored."""
    kept = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(kept.casefold().split())


def on_partial(
    step: Step, state: CallState, prompt: CallPrompt, *, seq: int, ts: float = 0
) -> bool:
    """An interim prompt written (by the gateway) at wall ms ``ts``; True when
    the state changed (so it is persisted)."""
    if not step.config.preemptive or state.closed:
        return False
    text = prompt.voice_prompt.strip()
    norm = normalise(text)
    if not norm or (state.partial_text and norm == normalise(state.partial_text)):
        return False  # nothing new heard: the settle timer keeps running
    state.partial_text, state.partial_seq = text, seq
    spec = state.speculation
    if spec is not None and normalise(spec.text) != norm:
        if norm.startswith(normalise(spec.text)):
            # The caller went on speaking: not a recogniser's revision, and
            # not counted against the utterance's budget.
            discard(step, state, "extended")
            state.speculations -= 1
        else:
            discard(step, state, "changed")
    state.timers.pop(SETTLE, None)
    if not _may_speculate(step, state):
        return True
    if ts and _shed(step, state, "partial_lag", step.wall_ms - ts):
        return True
    if step.config.settle_ms > 0:
        state.timers[SETTLE] = int(step.now + step.config.settle_ms)
    else:
        on_settle(step, state)  # no settle time: at once, without a timer entry
    return True


def _may_speculate(step: Step, state: CallState) -> bool:
    config = step.config
    return (
        config.preemptive
        and not state.closed
        and not state.ending
        and not state.open_turns
        and not state.dtmf_digits
        and bool(state.partial_text)
        and len(state.partial_text) <= config.speculation_max_chars
        and state.speculations < config.max_speculations
    )


def _shed(step: Step, state: CallState, reason: str, lag_ms: float) -> bool:
    """True when the bus is so far behind (``lag_ms`` past when the entry was
    due) that no speculation starts: it would only add to the backlog the
    final prompt waits in. Counted (``speculation_shed``)."""
    limit = step.config.speculation_max_lag_ms
    if limit <= 0 or lag_ms <= limit:
        return False
    lag = round(lag_ms)
    _fact(step, state, "speculation_shed", state.partial_seq, reason=reason, lag_ms=lag)
    log.info("speculation_shed", reply_to=state.partial_seq, reason=reason, lag_ms=lag)
    return True


def on_settle(step: Step, state: CallState, *, late_ms: float = 0.0) -> None:
    """The interim prompt stayed unchanged for ``settle_ms``: start a held
    reply (none when the timer's entry is applied ``late_ms`` too late)."""
    spec = state.speculation
    if spec is not None and normalise(spec.text) == normalise(state.partial_text):
        return  # already speculating on these words
    if not _may_speculate(step, state):
        return
    if _shed(step, state, "settle_lag", late_ms):
        return
    reply_to, text = state.partial_seq, state.partial_text
    # Like any request, only what is new since the call's last one.
    ref, new = request_history(state, [{"role": "user", "content": text}])
    message = LlmRequest(
        system=step.config.system_prompt, messages=new, reply_to=reply_to, held=True, history=ref
    )
    session, gateway = state.session, state.gateway
    # Stamped with the turn it would become, for the LLM actor's logs.
    turn = state.turn + 1
    step.send(message, state.call, session=session, gateway=gateway, seq=reply_to, turn=turn)
    state.speculation = Speculation(reply_to=reply_to, text=text, session=session)
    state.speculations += 1
    _fact(step, state, "speculation_started", reply_to, chars=len(text))
    log.info("speculation_started", reply_to=reply_to, chars=len(text), n=state.speculations)


def on_final(step: Step, state: CallState, text: str, *, seq: int, prompt_ms: int) -> bool:
    """The final prompt ``seq`` with the caller's ``text``: True when a
    speculation was adopted as its turn (the caller then needs no request)."""
    spec = state.speculation
    state.partial_text, state.partial_seq, state.speculations = "", 0, 0
    state.timers.pop(SETTLE, None)
    if spec is None:
        return False
    if (
        spec.session != state.session
        or state.open_turns
        or not text
        or normalise(spec.text) != normalise(text)
    ):
        discard(step, state, "mismatch")
        return False
    _adopt(step, state, spec, text, seq=seq, prompt_ms=prompt_ms)
    return True


def _adopt(
    step: Step, state: CallState, spec: Speculation, text: str, *, seq: int, prompt_ms: int
) -> None:
    state.speculation = None
    state.history.append({"role": "user", "content": text})
    state.turn += 1
    state.reply_to = spec.reply_to
    turn = OpenTurn(
        turn=state.turn,
        reply_to=spec.reply_to,
        index=len(state.history),
        prompt_ms=prompt_ms,
        speculative=True,
        prompt_seq=seq,
    )
    state.open_turns.append(turn)
    state.speaking = None
    state.timers.pop(SILENCE, None)
    session, gateway, turn_no = state.session, state.gateway, state.turn
    for message in (
        GatewayAdopt(reply_to=spec.reply_to, seq=seq),
        ControlAdopt(reply_to=spec.reply_to, seq=seq),
    ):
        step.send(message, state.call, session=session, gateway=gateway, seq=seq, turn=turn_no)
    _fact(step, state, "prompt_applied", seq, t_ms=step.wall_ms)
    _fact(step, state, "speculation_adopted", seq, speculation=spec.reply_to)
    log.info("speculation_adopted", reply_to=spec.reply_to, seq=seq, early=spec.result is not None)
    if spec.result is not None:
        # The held reply finished before the caller did.
        apply_result(step, state, LlmResult.from_body(spec.result), turn_no=turn.turn)


def discard(step: Step, state: CallState, reason: str) -> None:
    """Cancel the running speculation, if any (its tokens are never heard)."""
    spec = state.speculation
    if spec is None:
        return
    state.speculation = None
    step.send(
        ControlCancel(reply_to=spec.reply_to, reason=reason),
        state.call,
        session=spec.session,
        gateway=state.gateway,
        seq=spec.reply_to,
        turn=state.turn,
    )
    _fact(step, state, "speculation_discarded", spec.reply_to, reason=reason)
    log.info("speculation_discarded", reply_to=spec.reply_to, reason=reason)
    if spec.result is not None:
        _wasted(step, state, LlmResult.from_body(spec.result))
        return
    state.discarded.append((spec.session, spec.reply_to))
    del state.discarded[:-_DISCARDED_KEPT]


def forget_utterance(step: Step, state: CallState, reason: str) -> None:
    """Input that is not the caller's words (a key, an interrupt, the end of
    the session): the utterance so far is not worth a reply."""
    discard(step, state, reason)
    state.partial_text, state.partial_seq = "", 0
    state.timers.pop(SETTLE, None)


def on_result(step: Step, state: CallState, result: LlmResult, *, session: str) -> bool:
    """A reply to a speculation; True when handled here (else a turn's own)."""
    reply_to = result.reply_to
    spec = state.speculation
    if spec is not None and (spec.session, spec.reply_to) == (session, reply_to):
        if result.shed:
            # Its worker dropped it unrun (and counted it): the final
            # prompt is answered as usual, and the LLM workers being behind,
            # no other speculation starts in this utterance.
            state.speculation = None
            state.speculations = max(state.speculations, step.config.max_speculations)
            log.info("speculation_forgotten", reply_to=reply_to, reason="shed")
        else:
            spec.result = result.to_body()  # adopted or discarded on the final prompt
        return True
    if (session, reply_to) in state.discarded:
        state.discarded.remove((session, reply_to))
        if not result.shed:
            _wasted(step, state, result)
        return True
    if session != state.session:
        return False
    for turn in state.open_turns:
        if turn.speculative and turn.reply_to == reply_to:
            if result.shed:
                # Adopted while its worker was dropping it: ask again, unheld
                # (the gateway passes an adopted reply's tokens as they come).
                log.warning("adopted_speculation_shed", reply_to=reply_to)
                request(step, state, turn)
            else:
                apply_result(step, state, result, turn_no=turn.turn)
            return True
    return False


def _wasted(step: Step, state: CallState, result: LlmResult) -> None:
    usage = result.usage
    _fact(
        step,
        state,
        "speculation_wasted",
        result.reply_to,
        output_tokens=usage.output_tokens,
        input_tokens=usage.input_tokens,
    )


def _fact(
    step: Step, state: CallState, name: str, reply_to: int, *, t_ms: float | None = None, **f: Any
) -> None:
    step.effects.append(
        FactOut(
            name,
            state.call,
            {"reply_to": reply_to, **f},
            session=state.session,
            gateway=state.gateway,
            seq=reply_to,
            turn=state.turn,
            t_ms=t_ms,
        )
    )
