"""Barge-in, after_speech and /action through the real gateway and the simulator.

The test plays the actors' part on the bus (it appends ``llm.tokens`` and
``gateway.send`` entries as the LLM and conversation actors would), so these
tests pin the gateway's side of the contract alone. Timed playback runs on
real sockets, so rates are fast; every test is bounded by ``trio.fail_after``
and waits for events (bus entries, frames, playback progress), never sleeps.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from bus.base import Bus
from bus.envelope import Envelope, Kind
from bus.memory import MemoryBus
from gateway.config import GatewayConfig
from gateway.server import Gateway
from relay import End, Interrupt
from relay.twiml import RelayAttributes
from switchboard.twilio import SimulatedCall, TimedPlayback, open_call

PUBLIC_URL = "https://agent.example.com"
TOKEN = "barge-in-token"
EVENTS = "speaker-events tokens-played"


class Rig:
    """A gateway on a free port, and the bus the actors would use."""

    def __init__(self, bus: Bus, config: GatewayConfig, port: int) -> None:
        self.bus, self.config, self.port = bus, config, port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def tokens(
        self, call: SimulatedCall, *, reply_to: int, index: int, text: str, last: bool = False
    ) -> None:
        await self._append(
            call,
            Kind.LLM_TOKENS,
            {"text": text, "index": index, "last": last, "reply_to": reply_to},
        )

    async def send(
        self, call: SimulatedCall, frame: dict[str, Any], *, after_speech: bool = False
    ) -> None:
        await self._append(call, Kind.GATEWAY_SEND, {"frame": frame, "after_speech": after_speech})

    async def _append(self, call: SimulatedCall, kind: Kind, body: dict[str, Any]) -> None:
        env = Envelope(
            kind=kind,
            call=call.call_sid,
            session=call.session_id,
            gateway=self.config.gateway_id,
            turn=1,
            body=body,
        )
        await self.bus.append(self.config.keys.gateway(self.config.gateway_id), env.encode())

    async def wait_kind(self, call: SimulatedCall, kind: str, *, count: int = 1) -> Envelope:
        """The ``count``-th caller event of ``kind`` on the call's partition stream."""
        stream = self.config.keys.calls_for(call.call_sid)
        after, seen = "0-0", 0
        while True:
            for entry in await self.bus.read(stream, after, count=100, block_ms=1000):
                after = entry.id
                env = Envelope.decode(entry.fields)
                if env.kind == kind and env.session == call.session_id:
                    seen += 1
                    if seen == count:
                        return env


async def start(nursery: trio.Nursery, **relay: Any) -> Rig:
    bus = MemoryBus()
    config = GatewayConfig(
        gateway_id="gw-barge",
        port=0,
        public_url=PUBLIC_URL,
        auth_token=TOKEN,
        relay=RelayAttributes(**relay),
    )
    gateway = Gateway(bus, config)
    port: int = await nursery.start(gateway.serve)
    return Rig(bus, config, port)


def timed(call: SimulatedCall) -> TimedPlayback:
    assert isinstance(call.playback, TimedPlayback)
    return call.playback


async def test_barge_in_fences_the_reply_and_reports_the_chunk_fragment(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(20):
        rig = await start(nursery, debug=EVENTS)
        async with open_call(
            rig.base, public_url=PUBLIC_URL, auth_token=TOKEN, playback_rate=60
        ) as call:
            await call.prompt("tell me about the menu")
            prompt = await rig.wait_kind(call, Kind.CALL_PROMPT)
            first = "We have soup today. "
            second = "The tomato soup comes with bread and a green salad on the side. "
            await rig.tokens(call, reply_to=prompt.seq, index=0, text=first)
            await rig.tokens(call, reply_to=prompt.seq, index=1, text=second)
            # Barge in while the second chunk plays.
            await timed(call).wait_heard(1)
            await timed(call).wait_into_chunk(20)
            assert await call.barge_in()
            interrupt = await rig.wait_kind(call, Kind.CALL_INTERRUPT)
            # The LLM has not been cancelled yet: it keeps streaming the old reply.
            await rig.tokens(call, reply_to=prompt.seq, index=2, text="And dessert. ", last=True)
            # A frame outside turn fencing does reach the caller: the simulator
            # must catch it as a late token (proves the check can fail).
            await rig.send(call, {"type": "text", "token": "unfenced", "last": False})
            await call.wait_until(lambda: bool(call.late_tokens))
            await call.prompt("do you have dessert")
            again = await rig.wait_kind(call, Kind.CALL_PROMPT, count=2)
            await rig.tokens(call, reply_to=again.seq, index=0, text="Yes, cake.", last=True)
            reply = await call.reply()

        assert reply.text == "Yes, cake."
        # Only the unfenced gateway.send frame arrived late; the old reply's
        # third token was fenced by the gateway.
        assert call.late_tokens == ["unfenced"]
        heard = interrupt.body["utteranceUntilInterrupt"]
        assert heard and second.startswith(heard)  # chunk-scoped, whole words
        assert not first.strip().startswith(heard)
        assert interrupt.body["durationUntilInterruptMs"] > 0
        assert timed(call).heard[0] == first.strip()
        assert call.interrupts == [Interrupt(heard, interrupt.body["durationUntilInterruptMs"])]


async def test_info_events_reach_the_app_in_twilios_order(nursery: trio.Nursery) -> None:
    with trio.fail_after(20):
        rig = await start(nursery, debug=EVENTS, welcome_greeting="Hi there, welcome.")
        async with open_call(
            rig.base, public_url=PUBLIC_URL, auth_token=TOKEN, playback_rate=200
        ) as call:
            # The greeting is spoken by Twilio: on, tokensPlayed, off.
            off = await rig.wait_kind(call, Kind.CALL_INFO, count=3)
            await call.prompt("hello")
            prompt = await rig.wait_kind(call, Kind.CALL_PROMPT)
            await rig.tokens(call, reply_to=prompt.seq, index=0, text="Short one.", last=True)
            await rig.wait_kind(call, Kind.CALL_INFO, count=6)
        stream = rig.config.keys.calls_for(call.call_sid)
        infos = [
            (env.body["name"], env.body["value"])
            for env in (Envelope.decode(e.fields) for e in await rig.bus.range(stream))
            if env.kind == Kind.CALL_INFO
        ]
        assert off.body == {"type": "info", "name": "agentSpeaking", "value": "off"}
        assert infos == [
            ("agentSpeaking", "on"),
            ("tokensPlayed", "Hi there, welcome."),
            ("agentSpeaking", "off"),
            ("agentSpeaking", "on"),
            ("tokensPlayed", "Short one."),
            ("agentSpeaking", "off"),
        ]


async def test_after_speech_end_waits_for_agent_speaking_off(nursery: trio.Nursery) -> None:
    with trio.fail_after(20):
        rig = await start(nursery, debug=EVENTS)
        async with open_call(
            rig.base, public_url=PUBLIC_URL, auth_token=TOKEN, playback_rate=80
        ) as call:
            await call.prompt("bye")
            prompt = await rig.wait_kind(call, Kind.CALL_PROMPT)
            goodbye = "Thanks for calling, have a lovely evening. Goodbye!"
            await rig.tokens(call, reply_to=prompt.seq, index=0, text=goodbye, last=True)
            await rig.send(
                call, {"type": "end", "handoffData": '{"reason":"end_call"}'}, after_speech=True
            )
            action = await call.wait_ended()
        # The end came only after the whole goodbye was spoken.
        assert " ".join(timed(call).heard) == goodbye
        assert isinstance(call.received[-1], End)
        assert call.session_status == "ended"
        assert action is not None and action.verbs == ("Hangup",)


async def test_after_speech_without_speaker_events_uses_the_estimate(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(20):
        rig = await start(nursery)
        async with open_call(rig.base, public_url=PUBLIC_URL, auth_token=TOKEN) as call:
            await call.prompt("bye")
            prompt = await rig.wait_kind(call, Kind.CALL_PROMPT)
            await rig.tokens(call, reply_to=prompt.seq, index=0, text="Bye now.", last=True)
            await rig.send(call, {"type": "end"}, after_speech=True)
            # A plain frame queued after it is not held back.
            await rig.send(call, {"type": "sendDigits", "digits": "1"})
            await call.wait_ended()
        kinds = [type(m).__name__ for m in call.received]
        assert kinds == ["Text", "SendDigits", "End"]


async def test_after_speech_for_a_stale_session_is_dropped(nursery: trio.Nursery) -> None:
    with trio.fail_after(20):
        rig = await start(nursery)
        async with open_call(rig.base, public_url=PUBLIC_URL, auth_token=TOKEN) as call:
            await rig.wait_kind(call, Kind.CALL_SETUP)
            env = Envelope(
                kind=Kind.GATEWAY_SEND,
                call=call.call_sid,
                session="VXstale",
                gateway=rig.config.gateway_id,
                body={"frame": {"type": "end"}, "after_speech": True},
            )
            await rig.bus.append(rig.config.keys.gateway(rig.config.gateway_id), env.encode())
            await rig.send(call, {"type": "text", "token": "still here", "last": True})
            reply = await call.reply()
        assert reply.text == "still here"
        assert call.session_status == "completed"  # we hung up; the stale end never came


async def test_transfer_handoff_dials_and_queues(nursery: trio.Nursery) -> None:
    with trio.fail_after(20):
        rig = await start(nursery)
        handoffs = {
            '{"reason":"transfer","number":"+15551234567"}': ("Dial", "+15551234567"),
            '{"reason":"transfer","queue":"support"}': ("Enqueue", "support"),
            '{"reason":"transfer","number":"555; <Hangup/>"}': ("Hangup", None),
            '{"reason":"end_call"}': ("Hangup", None),
        }
        for handoff, (verb, target) in handoffs.items():
            async with open_call(rig.base, public_url=PUBLIC_URL, auth_token=TOKEN) as call:
                await rig.wait_kind(call, Kind.CALL_SETUP)
                await rig.send(call, {"type": "end", "handoffData": handoff})
                action = await call.wait_ended()
            assert call.action_request is not None
            assert json.loads(call.action_request["HandoffData"]) == json.loads(handoff)
            assert action is not None and action.verbs == (verb,)
            if target is not None:
                assert f"<{verb}>{target}</{verb}>" in action.xml


async def test_dropped_session_resumes_with_the_resume_greeting(nursery: trio.Nursery) -> None:
    with trio.fail_after(20):
        rig = await start(
            nursery, debug=EVENTS, welcome_greeting="Hello!", parameters=(("tier", "gold"),)
        )
        async with open_call(
            rig.base, public_url=PUBLIC_URL, auth_token=TOKEN, playback_rate=500
        ) as call:
            await rig.wait_kind(call, Kind.CALL_SETUP)
            action = await call.drop()
            assert action is not None and action.relay is not None
            async with call.follow_action() as resumed:
                setup = await rig.wait_kind(resumed, Kind.CALL_SETUP)
                await resumed.prompt("where were we")
                prompt = await rig.wait_kind(resumed, Kind.CALL_PROMPT)
                await rig.tokens(
                    resumed, reply_to=prompt.seq, index=0, text="Right here.", last=True
                )
                reply = await resumed.reply()
                await timed(resumed).wait_heard(4)
        assert call.action_request is not None
        assert call.action_request["SessionStatus"] == "failed"
        assert call.action_request["ErrorCode"] == "64105"
        assert action.relay.welcome_greeting == rig.config.resume_greeting
        assert resumed.call_sid == call.call_sid and resumed.session_id != call.session_id
        assert setup.body["callStatus"] == "IN_PROGRESS"
        assert setup.body["customParameters"] == {"tier": "gold", "resumed": "true"}
        assert reply.text == "Right here."
        assert timed(resumed).heard_text == rig.config.resume_greeting + " Right here."
