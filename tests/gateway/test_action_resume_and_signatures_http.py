"""Through a running gateway: the resume budget on /action, Twilio's other signatures.

Two gateways share one bus (memory and Redis): every gateway agrees on how
often a call was resumed. Requests are signed as Twilio signs them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import trio
from gwkit import PUBLIC_URL, TOKEN, http, start_gateway

from bus.base import Bus
from relay.signature import HMAC_SHA256, SETTINGS_HEADER, SIGNATURE_HEADER, sign

SHARED = "webhook-shared-key-secret"
SETTINGS = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"


def _verbs(body: bytes) -> list[str]:
    return [child.tag for child in ET.fromstring(body)]


async def _action(port: int, call: str, session: str, code: str) -> list[str]:
    form = {
        "CallSid": call,
        "SessionId": session,
        "SessionStatus": "failed",
        "CallStatus": "in-progress",
        "ErrorCode": code,
        "ErrorMessage": "Websocket ended",
    }
    headers = [(SIGNATURE_HEADER, sign(TOKEN, f"{PUBLIC_URL}/action", form))]
    reply = await http(port, "POST", "/action", form=form, headers=headers)
    assert reply.status == 200
    return _verbs(reply.body)


async def test_a_call_is_resumed_at_most_twice_whichever_gateway_twilio_calls(
    nursery: trio.Nursery, bus: Bus
) -> None:
    with trio.fail_after(20):
        a = await start_gateway(nursery, bus, gateway_id="gw-a", auth_token=TOKEN)
        b = await start_gateway(nursery, bus, gateway_id="gw-b", auth_token=TOKEN)
        call = "CA000000000000000000000000000000aa"
        assert await _action(a.port, call, "VX1", "64105") == ["Connect"]
        assert await _action(b.port, call, "VX2", "64105") == ["Connect"]
        # Twilio retries a callback: the same session keeps its answer.
        assert await _action(a.port, call, "VX2", "64105") == ["Connect"]
        assert await _action(a.port, call, "VX3", "64105") == ["Say", "Hangup"]
        assert await _action(b.port, call, "VX4", "64105") == ["Say", "Hangup"]
        # A failure that would repeat is not resumed even once.
        other = "CA000000000000000000000000000000bb"
        assert await _action(b.port, other, "VX5", "64106") == ["Say", "Hangup"]
        assert await _action(a.port, other, "VX6", "64105") == ["Connect"]


async def test_shared_key_signatures_are_accepted_with_the_key_they_name(
    nursery: trio.Nursery, bus: Bus
) -> None:
    form = {"CallSid": "CA1", "From": "+15550100", "To": "+15550101"}
    url = f"{PUBLIC_URL}/twiml"
    sha256 = sign(SHARED, url, form, algorithm=HMAC_SHA256)
    with trio.fail_after(20):
        gw = await start_gateway(nursery, bus, auth_token=TOKEN, webhook_shared_key=SHARED)
        ok = await http(
            gw.port,
            "POST",
            "/twiml",
            form=form,
            headers=[(SIGNATURE_HEADER, sha256), (SETTINGS_HEADER, SETTINGS)],
        )
        # Without the header it is read as the Auth Token's HMAC-SHA1: wrong.
        no_header = await http(
            gw.port, "POST", "/twiml", form=form, headers=[(SIGNATURE_HEADER, sha256)]
        )
        # The Auth Token's signature still works for webhooks no rule matches.
        classic = await http(
            gw.port,
            "POST",
            "/twiml",
            form=form,
            headers=[(SIGNATURE_HEADER, sign(TOKEN, url, form))],
        )
        without_key = await start_gateway(nursery, bus, gateway_id="gw-nokey", auth_token=TOKEN)
        unknown_key = await http(
            without_key.port,
            "POST",
            "/twiml",
            form=form,
            headers=[(SIGNATURE_HEADER, sha256), (SETTINGS_HEADER, SETTINGS)],
        )
    assert (ok.status, no_header.status, classic.status) == (200, 403, 200)
    assert _verbs(ok.body) == ["Connect"]
    assert unknown_key.status == 403


async def test_a_repeated_form_parameter_is_checked_with_all_its_values(
    nursery: trio.Nursery, bus: Bus
) -> None:
    pairs = [("CallSid", "CA1"), ("StirPassportToken", "a"), ("StirPassportToken", "b")]
    body = urlencode(pairs).encode()
    url = f"{PUBLIC_URL}/status"
    content = ("Content-Type", "application/x-www-form-urlencoded")
    with trio.fail_after(20):
        gw = await start_gateway(nursery, bus, auth_token=TOKEN)
        right = await http(
            gw.port,
            "POST",
            "/status",
            body=body,
            headers=[content, (SIGNATURE_HEADER, sign(TOKEN, url, pairs))],
        )
        one_value = sign(TOKEN, url, dict(pairs))
        wrong = await http(
            gw.port, "POST", "/status", body=body, headers=[content, (SIGNATURE_HEADER, one_value)]
        )
    assert (right.status, wrong.status) == (204, 403)
