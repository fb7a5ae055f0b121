"""One simulated call playing a scenario: paced turns, frames attributed to turns.

An interrupted reply is fenced: the caller sends ``interrupt`` with the last
words received so far, and the next ``say`` follows after its speech time (the
caller is already talking, so no think time). Frames that arrive between the
interrupt and that prompt were in flight and are counted, not faulted.

The same holds after the prompt: an earlier reply (an interrupted one, or the
answer to a keypad entry the caller talked over) may still have frames on the
wire that the app sent before it read the prompt. When a reply check is
given the reply is known, so such leading frames (even an earlier reply's
``last: true``) are counted with the earlier reply rather than faulted; on a
busy machine that window is wide.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import structlog
import trio

from relay import Prompt, Text
from relay.twiml import TwimlError
from switchboard.twilio.call import SimulatedCall
from switchboard.twilio.connect import open_call
from switchboard.twilio.errors import SessionClosed, SimulatorError
from switchboard.twilio.partials import plan_partials
from switchboard.twilio.results import CallResult, SimulationConfig, TurnResult
from switchboard.twilio.scenario import Dtmf, Say, Scenario

log = structlog.get_logger()

# Judges one reply: (prompt, reply text, complete) -> None, or the kind of
# fault. Twilio's side knows nothing of the app, so the composition root
# supplies it (switchboard.checks for the scripted provider).
ReplyCheck = Callable[[str, str, bool], str | None]


class _CallDriver:
    """Plays a scenario on one call; a reader task attributes frames to turns."""

    def __init__(
        self,
        call: SimulatedCall,
        result: CallResult,
        scenario: Scenario,
        config: SimulationConfig,
        rng: random.Random,
        check: ReplyCheck | None,
    ) -> None:
        self.call = call
        self.result = result
        self.scenario = scenario
        self.config = config
        self.rng = rng
        self.check = check
        self.current: TurnResult | None = None
        self.after_interrupt = False
        self.after_dtmf = False
        # The current turn's prompt went out while an earlier reply may still
        # have frames on the wire (after an interrupt or a keypad entry); and
        # the arrival time of each of the turn's frames.
        self.in_flight_possible = False
        self.in_flight_kind = "dtmf"
        self.arrivals: list[float] = []
        self.closed = False
        self.changed = trio.Event()  # set whenever a frame was attributed

    async def sleep_ms(self, ms: float) -> None:
        if ms <= 0:
            return
        j = self.scenario.jitter
        await trio.sleep(ms / 1000 * (1 + self.rng.uniform(-j, j) if j else 1))

    async def read(self) -> None:
        """Attribute every app frame to the turn awaiting it (until the session ends)."""
        index = 0
        while True:
            try:
                msg = await self.call.next_message()
            except SessionClosed:
                self.closed = True
                self._wake()
                return
            at = self.call.received_at[index]
            index += 1
            if not isinstance(msg, Text):
                continue
            turn = self.current
            if turn is None:
                if self.after_interrupt:
                    # Sent before the gateway saw the interrupt: in flight, not a fault.
                    self.result.frames_after_interrupt += 1
                elif self.after_dtmf:
                    # A keypad entry ('#' or the idle timeout) is a turn: this is
                    # its reply, until the next prompt supersedes it.
                    self.result.dtmf_reply_frames += 1
                elif self.scenario.strict_turns:
                    self.result.stray_frames += 1
                    self.result.violations.append(f"text frame outside any turn: {msg.token!r}")
                else:
                    # ConversationRelay lets the app speak at any time: a silence
                    # re-prompt, a tool's goodbye. Counted, not a fault.
                    self.result.app_text_frames += 1
                continue
            if turn.first_at is None:
                turn.first_at = at
            turn.frames.append(msg.token)
            self.arrivals.append(at)
            if msg.last and not self._drop_in_flight(turn):
                turn.last_at = at
                self.current = None
            self._wake()

    def _drop_in_flight(self, turn: TurnResult) -> bool:
        """At a turn's ``last: true``: move leading frames of an earlier reply
        (still on the wire when the prompt went out) out of the turn and count
        them. True when none of the frames are this turn's reply yet (that
        ``last`` closed the earlier one): the turn goes on."""
        check = self.check
        if check is None or not self.in_flight_possible or turn.interrupted:
            return False
        own = next(
            (
                k
                for k in range(len(turn.frames))
                if check(turn.prompt, "".join(turn.frames[k:]), True) is None
            ),
            None,
        )
        if own == 0:
            return False
        moved = len(turn.frames) if own is None else own
        if self.in_flight_kind == "interrupt":
            self.result.frames_after_interrupt += moved
        else:
            self.result.dtmf_reply_frames += moved
        del turn.frames[:moved]
        del self.arrivals[:moved]
        turn.first_at = self.arrivals[0] if self.arrivals else None
        return own is None

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _wait_for(self, turn: TurnResult, frames: int | None) -> None:
        """Until ``turn`` completes (or has ``frames`` frames), within the turn timeout."""
        with trio.fail_after(self.config.turn_timeout_s):
            while not turn.complete and (frames is None or len(turn.frames) < frames):
                if self.closed:
                    raise SessionClosed(f"session over ({self.call.session_status})")
                await self.changed.wait()

    async def say(self, turn: Say, index: int, *, thinking: bool) -> None:
        if thinking:
            await self.sleep_ms(self.scenario.think_ms if turn.think_ms is None else turn.think_ms)
        speech = self.scenario.speech_ms(turn)
        partials = self.scenario.partials if turn.partials is None else turn.partials
        if partials and turn.text.split():
            # As Twilio does (partials.py): interim prompts every ~250 ms,
            # the final ~500 ms after the last one, which now and then had
            # its last word wrong.
            changed = self.rng.random() < self.scenario.partial_changes
            plan = plan_partials(turn.text, speech, changed=changed)
            at = 0.0
            for t, text in plan.partials:
                await self.sleep_ms(t - at)
                at = t
                interim = Prompt(text, self.scenario.lang, False)
                await self.call.send_raw(self.call.side.send(interim))
            await self.sleep_ms(plan.final_at_ms - at)
        else:
            await self.sleep_ms(speech)
        record = TurnResult(
            call=self.result.index, index=index, prompt=turn.text, sent_at=trio.current_time()
        )
        self.result.turns.append(record)
        # Attribution starts before the send, so an instant reply is not missed.
        self.in_flight_possible = self.after_interrupt or self.after_dtmf
        self.in_flight_kind = "interrupt" if self.after_interrupt else "dtmf"
        self.arrivals = []
        self.after_interrupt = False
        self.after_dtmf = False
        self.current = record
        await self.call.prompt(turn.text, lang=self.scenario.lang)
        await self._wait_for(record, turn.interrupt_after)
        if turn.interrupt_after is not None:
            # The caller barges in, having heard the last few words received so far
            # (Twilio reports the chunk that was playing, not the whole reply).
            heard = " ".join("".join(record.frames).split()[-5:])
            record.interrupted = True
            self.current = None
            self.after_interrupt = True
            self.result.interrupts += 1
            elapsed = (trio.current_time() - record.sent_at) * 1000
            await self.call.interrupt(heard, round(elapsed))
        self._check(record)

    def _check(self, record: TurnResult) -> None:
        if self.check is not None:
            record.fault = self.check(record.prompt, "".join(record.frames), not record.interrupted)

    async def run(self) -> None:
        index = 0
        thinking = True
        for _ in range(self.scenario.repeat):
            for turn in self.scenario.turns:
                if isinstance(turn, Say):
                    await self.say(turn, index, thinking=thinking)
                    index += 1
                    # After a barge-in the caller is already speaking the next turn.
                    thinking = turn.interrupt_after is None
                elif isinstance(turn, Dtmf):
                    self.after_dtmf = True
                    for i, digit in enumerate(turn.digits):
                        if i:
                            await self.sleep_ms(self.scenario.dtmf_gap_ms)
                        if await self.call.dtmf(digit):
                            self.result.dtmf_sent += 1
                else:
                    await self.sleep_ms(turn.ms)


async def run_one(
    index: int,
    scenario: Scenario,
    config: SimulationConfig,
    result: CallResult,
    check: ReplyCheck | None = None,
) -> None:
    rng = random.Random(config.seed * 1_000_003 + index)
    try:
        async with open_call(
            config.url,
            public_url=config.public_url,
            auth_token=config.auth_token,
            twiml=config.twiml,
        ) as call:
            result.call_sid = call.call_sid
            result.opened_at = trio.current_time()
            driver = _CallDriver(call, result, scenario, config, rng, check)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(driver.read)
                    try:
                        await driver.run()
                    finally:
                        # Hang up (the context's exit) once the reader has seen
                        # everything already here; it stops at the session's end.
                        nursery.cancel_scope.cancel()
            finally:
                result.closed_at = trio.current_time()
            result.violations += [str(v) for v in call.violations]
        result.session_status = call.session_status
    except trio.TooSlowError:
        result.error = f"reply_timeout: no last:true within {config.turn_timeout_s:g} s"
    except SessionClosed as exc:
        result.error = f"session_closed: {exc}"
    except (SimulatorError, TwimlError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    except (OSError, trio.BrokenResourceError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    if result.error:
        log.warning(
            "simulated_call_failed", call=index, call_sid=result.call_sid, error=result.error
        )
