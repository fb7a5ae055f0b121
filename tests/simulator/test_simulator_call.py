"""The Twilio-side simulator against a small fake app on a real loopback port.

Every I/O test is bounded with ``trio.fail_after``; nothing sleeps to wait.
"""

from __future__ import annotations

import json

import pytest
import trio
from sim_fakeapp import HANDOFF, FakeApp, frames_of_type, serve_fake_app
from twilio.request_validator import RequestValidator

from relay import (
    CLOSE_MALFORMED,
    REASON_MALFORMED,
    FrameErrorKind,
    Play,
    SendDigits,
    Text,
)
from relay.signature import sign
from relay.twiml import TwimlError, check_relay_url, parse_twiml
from switchboard.twilio import HttpError, RelayConnectError, SessionClosed, open_call

TOKEN = "simulator-test-token"
TIMEOUT = 10


# --------------------------------------------------------------------------- TwiML, signing


def test_parse_twiml_reads_connect_relay_language_and_parameters() -> None:
    twiml = parse_twiml(
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Connect action="https://agent.example.com/action">'
        '<ConversationRelay url="wss://agent.example.com/relay" welcomeGreeting="Hi there"'
        ' dtmfDetection="true" partialPrompts="false" ttsProvider="Amazon">'
        '<Language code="sv-SE" voice="Astrid-Neural"/>'
        '<Parameter name="tenant" value="acme"/><Parameter name="ref" value=""/>'
        "</ConversationRelay></Connect><Hangup/></Response>"
    )
    assert twiml.verbs == ("Connect", "Hangup")
    relay = twiml.relay
    assert relay is not None
    assert relay.url == "wss://agent.example.com/relay"
    assert relay.action == "https://agent.example.com/action"
    assert relay.action_method == "POST"
    assert relay.welcome_greeting == "Hi there"
    assert relay.dtmf_detection is True
    assert relay.partial_prompts is False
    assert relay.attributes["ttsProvider"] == "Amazon"
    assert [dict(lang) for lang in relay.languages] == [{"code": "sv-SE", "voice": "Astrid-Neural"}]
    assert dict(relay.parameters) == {"tenant": "acme", "ref": ""}


def test_parse_twiml_without_relay_and_bad_xml() -> None:
    assert parse_twiml("<Response><Say>Bye</Say><Hangup/></Response>").relay is None
    with pytest.raises(TwimlError):
        parse_twiml("<Response><Connect>")
    with pytest.raises(TwimlError):
        parse_twiml("<html/>")
    with pytest.raises(TwimlError):
        parse_twiml("<Response><Connect><ConversationRelay/></Connect></Response>")


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("wss://agent.example.com/relay", True),
        ("ws://127.0.0.1:8080/relay", True),
        ("ws://localhost:8080/relay", True),
        ("ws://[::1]:8080/relay", True),
        ("ws://agent.example.com/relay", False),
        ("https://agent.example.com/relay", False),
        ("wss:///relay", False),
    ],
)
def test_relay_url_must_be_wss_except_on_loopback(url: str, ok: bool) -> None:
    if ok:
        check_relay_url(url)
    else:
        with pytest.raises(TwimlError):
            check_relay_url(url)


def test_sign_matches_twilios_validator() -> None:
    params = {"CallSid": "CA1", "From": "+15550100", "Digits": "1#"}
    url = "https://agent.example.com/twiml"
    validator = RequestValidator(TOKEN)
    assert validator.validate(url, params, sign(TOKEN, url, params))
    assert validator.validate(
        "wss://agent.example.com/relay", {}, sign(TOKEN, "wss://agent.example.com/relay")
    )
    assert not validator.validate(url, params, sign("other-token", url, params))


# --------------------------------------------------------------------------- a call


async def test_call_is_signed_over_public_urls_and_sends_setup() -> None:
    app = FakeApp(
        token=TOKEN,
        public_url="https://agent.example.com",
        relay_attrs={"welcomeGreeting": "Hello!"},
        parameters={"tenant": "acme"},
    )
    with trio.fail_after(TIMEOUT):
        async with (
            serve_fake_app(app),
            open_call(
                app.base_url,
                public_url="https://agent.example.com",
                auth_token=TOKEN,
                from_="+15550111",
                to="+15550122",
                custom={"Extra": "1"},
            ) as call,
        ):
            await call.prompt("hello")
            await call.reply()
            assert call.twiml.url == "wss://agent.example.com/relay"
            assert call.twiml.welcome_greeting == "Hello!"

    webhook, upgrade = app.requests[0], app.requests[1]
    assert (webhook.method, webhook.path) == ("POST", "/twiml")
    assert webhook.signature_valid is True
    assert webhook.params["CallSid"] == call.call_sid
    assert call.call_sid.startswith("CA") and len(call.call_sid) == 34
    assert webhook.params["AccountSid"].startswith("AC") and len(webhook.params["AccountSid"]) == 34
    assert webhook.params["CallStatus"] == "ringing"
    assert webhook.params["Direction"] == "inbound"
    assert webhook.params["ApiVersion"] == "2010-04-01"
    assert (webhook.params["From"], webhook.params["To"]) == ("+15550111", "+15550122")
    assert webhook.params["Extra"] == "1"
    # The upgrade went to the local port, signed over the TwiML url as written.
    assert (upgrade.method, upgrade.path, upgrade.signature_valid) == ("GET", "/relay", True)
    assert upgrade.signature == sign(TOKEN, "wss://agent.example.com/relay")

    setup = json.loads(app.frames[0])
    assert setup == {
        "type": "setup",
        "sessionId": call.session_id,
        "callSid": call.call_sid,
        "accountSid": webhook.params["AccountSid"],
        "parentCallSid": "",
        "from": "+15550111",
        "to": "+15550122",
        "forwardedFrom": "",
        "callerName": "",
        "direction": "inbound",
        "callType": "PSTN",
        "callStatus": "RINGING",
        "customParameters": {"tenant": "acme"},
    }
    assert call.session_id.startswith("VX") and len(call.session_id) == 34


async def test_reply_collects_text_frames_until_last() -> None:
    app = FakeApp(token=TOKEN)
    seen: list[str] = []

    async def on_token(frame: Text) -> None:
        seen.append(frame.token)

    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app), open_call(app.base_url, auth_token=TOKEN) as call:
            await call.prompt("what time is it", partials=True)
            reply = await call.reply(on_token=on_token)
            await call.prompt("media")
            media_reply = await call.reply()

    assert reply.text == "You said: what time is it"
    assert reply.tokens == ["You ", "said: ", "what ", "time ", "is ", "it"]
    assert seen == reply.tokens
    assert [f.last for f in reply.frames] == [False] * 5 + [True]
    assert reply.complete
    prompts = frames_of_type(app, "prompt")
    assert [(p["voicePrompt"], p["last"]) for p in prompts[:4]] == [
        ("what", False),
        ("what time", False),
        ("what time is", False),
        ("what time is it", True),
    ]
    assert media_reply.text == "You said: media"
    assert Play("https://example.com/a.mp3") in call.received
    assert SendDigits("12#") in call.received
    assert call.playback.digits_sent == ["12#"]
    assert call.violations == []


async def test_hangup_closes_1000_and_posts_completed_action() -> None:
    app = FakeApp(token=TOKEN)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app), open_call(app.base_url, auth_token=TOKEN) as call:
            await call.prompt("hi")
            await call.reply()
            response = await call.hangup()
            await app.closed.wait()
            with pytest.raises(SessionClosed):
                await call.prompt("are you there?")
    assert app.close == (1000, "Closing websocket session")
    assert call.session_status == "completed"
    assert response is not None and response.verbs == ("Hangup",)
    [action] = app.action_params()
    assert action["SessionStatus"] == "completed"
    assert action["CallStatus"] == "completed"
    assert action["SessionId"] == call.session_id
    assert action["SessionDuration"].isdigit()
    assert "HandoffData" not in action and "ErrorCode" not in action
    assert all(r.signature_valid for r in app.requests)


async def test_leaving_the_block_hangs_up() -> None:
    app = FakeApp(token=TOKEN)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app):
            async with open_call(app.base_url, auth_token=TOKEN) as call:
                pass
            await app.closed.wait()
    assert call.finished and call.session_status == "completed"
    assert [a["SessionStatus"] for a in app.action_params()] == ["completed"]


async def test_app_end_closes_1000_and_posts_ended_with_handoff_data() -> None:
    app = FakeApp(token=TOKEN, action_twiml="<Response><Dial>+15550123</Dial></Response>")
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app), open_call(app.base_url, auth_token=TOKEN) as call:
            await call.prompt("goodbye")
            assert (await call.reply()).text == "Bye!"
            action_twiml = await call.wait_ended()
            with pytest.raises(SessionClosed):
                await call.reply()
            await app.closed.wait()
    assert app.close == (1000, "Closing websocket session")
    assert call.session_status == "ended"
    assert action_twiml is not None and action_twiml.verbs == ("Dial",)
    [action] = app.action_params()
    assert action["SessionStatus"] == "ended"
    assert action["CallStatus"] == "in-progress"
    assert action["HandoffData"] == HANDOFF
    assert app.requests[-1].signature_valid is True


async def test_invalid_app_frame_is_answered_with_64107_and_dropped() -> None:
    app = FakeApp(token=TOKEN)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app), open_call(app.base_url, auth_token=TOKEN) as call:
            await call.prompt("garbage 1")
            reply = await call.reply()
            assert not call.finished
    assert reply.text == "You said: garbage 1"
    [violation] = call.violations
    assert violation.kind is FrameErrorKind.NOT_JSON
    errors = frames_of_type(app, "error")
    assert errors == [
        {"type": "error", "description": "Invalid message received, code: 64107, not json 0"}
    ]
    assert call.side.consecutive_invalid == 0  # the reply's valid frames reset the run
    assert call.session_status == "completed"


async def test_ten_invalid_frames_in_a_row_close_1007_and_fail_the_session() -> None:
    app = FakeApp(token=TOKEN)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app), open_call(app.base_url, auth_token=TOKEN) as call:
            await call.prompt("garbage 10")
            await call.wait_ended()
            with pytest.raises(SessionClosed) as info:
                await call.reply()
            await app.closed.wait()
    assert info.value.partial is not None and info.value.partial.frames == ()
    assert len(call.violations) == 10
    assert len(frames_of_type(app, "error")) == 10
    assert (call.close_code, call.close_reason) == (CLOSE_MALFORMED, REASON_MALFORMED)
    assert app.close == (CLOSE_MALFORMED, REASON_MALFORMED)
    assert call.session_status == "failed"
    [action] = app.action_params()
    assert (action["SessionStatus"], action["ErrorCode"], action["ErrorMessage"]) == (
        "failed",
        "64105",
        "Websocket ended",
    )
    assert action["CallStatus"] == "in-progress"


async def test_app_closing_the_socket_fails_the_session() -> None:
    app = FakeApp(token=TOKEN)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app), open_call(app.base_url, auth_token=TOKEN) as call:
            await call.prompt("hang up on me")
            await call.wait_ended()
    assert call.session_status == "failed"
    assert call.close_code == 1000
    [action] = app.action_params()
    assert (action["SessionStatus"], action["ErrorCode"]) == ("failed", "64105")


async def test_dtmf_needs_dtmf_detection_and_interrupt_encodings() -> None:
    app = FakeApp(token=TOKEN, relay_attrs={"dtmfDetection": "true"})
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app), open_call(app.base_url, auth_token=TOKEN) as call:
            assert await call.dtmf("5") is True
            assert (await call.reply()).text == "You pressed 5."
            await call.interrupt("You pressed", 460)
            await call.interrupt("You", 120.5, duration_as_string=True)
            with pytest.raises(ValueError):
                await call.dtmf("x")
            await call.prompt("sync")
            await call.reply()
    interrupts = frames_of_type(app, "interrupt")
    assert interrupts == [
        {
            "type": "interrupt",
            "utteranceUntilInterrupt": "You pressed",
            "durationUntilInterruptMs": 460,
        },
        {
            "type": "interrupt",
            "utteranceUntilInterrupt": "You",
            "durationUntilInterruptMs": "120.5",
        },
    ]

    quiet = FakeApp(token=TOKEN)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(quiet), open_call(quiet.base_url, auth_token=TOKEN) as call:
            assert await call.dtmf("5") is False
            await call.prompt("sync")
            await call.reply()
    assert frames_of_type(quiet, "dtmf") == []


async def test_without_a_token_nothing_is_signed() -> None:
    app = FakeApp(token=None)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app), open_call(app.base_url) as call:
            await call.prompt("hi")
            await call.reply()
    assert [r.signature for r in app.requests] == [None, None, None]


async def test_bad_signature_is_rejected_by_the_app() -> None:
    app = FakeApp(token=TOKEN)
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app):
            with pytest.raises(HttpError) as info:
                async with open_call(app.base_url, auth_token="wrong-token"):
                    pass
    assert info.value.status == 403
    assert [r.signature_valid for r in app.requests] == [False]


async def test_rejected_upgrade_is_a_relay_connect_error() -> None:
    app = FakeApp(token=TOKEN, ws_verify_url="wss://somewhere.else.example.com/relay")
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app):
            with pytest.raises(RelayConnectError) as info:
                async with open_call(app.base_url, auth_token=TOKEN):
                    pass
    assert info.value.status_code == 403
    assert [r.signature_valid for r in app.requests] == [True, False]


async def test_non_wss_relay_url_is_refused() -> None:
    app = FakeApp(token=TOKEN, relay_url="ws://agent.example.com/relay")
    with trio.fail_after(TIMEOUT):
        async with serve_fake_app(app):
            with pytest.raises(TwimlError):
                async with open_call(app.base_url, auth_token=TOKEN):
                    pass
    assert [r.path for r in app.requests] == ["/twiml"]
