"""The HTTP front and the webhooks, over real loopback sockets."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import h11
import trio
from gwkit import PUBLIC_URL, TOKEN, http, read_reply, request_bytes, start_gateway
from structlog.testing import capture_logs

from bus.base import Bus
from bus.memory import MemoryBus
from gateway.config import GatewayConfig
from gateway.http import ReplayStream
from gateway.server import with_bound_port
from relay.signature import sign

CALL_FORM = {"CallSid": "CA1", "From": "+15550001111", "To": "+15550002222", "Caller": ""}


async def test_health_ready_metrics(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        health = await http(gw.port, "GET", "/healthz")
        ready = await http(gw.port, "GET", "/readyz")
        metrics = await http(gw.port, "GET", "/metrics")
    assert (health.status, health.text) == (200, "ok")
    assert ready.status == 200
    assert metrics.status == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "switchboard_gateway_active_calls 0.0" in metrics.text


async def test_not_found_wrong_method_and_upgrade_required(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        missing = await http(gw.port, "GET", "/nope")
        wrong = await http(gw.port, "GET", "/twiml")
        wrong_relay = await http(gw.port, "POST", "/relay")
        plain_relay = await http(gw.port, "GET", "/relay")
    assert missing.status == 404
    assert wrong.status == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong_relay.status == 405
    assert plain_relay.status == 426


async def test_head_is_answered_like_get_without_a_body(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10), capture_logs() as logs:
        gw = await start_gateway(nursery, bus)
        health = await http(gw.port, "HEAD", "/healthz")
        metrics = await http(gw.port, "HEAD", "/metrics")
        post_only = await http(gw.port, "HEAD", "/twiml")
        missing = await http(gw.port, "HEAD", "/nope")
    assert (health.status, health.body, health.headers["content-length"]) == (200, b"", "2")
    assert metrics.status == 200 and metrics.body == b""
    assert int(metrics.headers["content-length"]) > 0
    assert (post_only.status, post_only.headers["allow"]) == (405, "POST")
    assert missing.status == 404
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []


async def test_past_the_connection_limit_new_connections_get_503(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(20):
        gw = await start_gateway(nursery, MemoryBus(), max_sockets=1, max_connections=3)
        idle = [await trio.open_tcp_stream("127.0.0.1", gw.port) for _ in range(3)]
        # Each idle connection is being served (its request head awaited).
        while True:
            refused = await http(gw.port, "GET", "/healthz")
            if refused.status == 503:
                break
        for stream in idle:
            await stream.aclose()
        while True:  # the server notices the closes in its own time
            ok = await http(gw.port, "GET", "/healthz")
            if ok.status == 200:
                break
    assert refused.headers["retry-after"] == "1"
    assert ok.text == "ok"


async def test_body_too_large(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus, max_body_bytes=1024)
        big = await http(gw.port, "POST", "/twiml", form={"Junk": "x" * 2000})
        small = await http(gw.port, "POST", "/twiml", form={"Junk": "x" * 100})
    assert big.status == 413
    assert small.status == 200


async def test_chunked_body_too_large(nursery: trio.Nursery, bus: Bus) -> None:
    # No Content-Length up front: the limit must hold while the body streams in.
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus, max_body_bytes=1024)
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            head = h11.Request(
                method="POST",
                target="/twiml",
                headers=[("Host", "x"), ("Transfer-Encoding", "chunked")],
            )
            data = conn.send(head) or b""
            data += conn.send(h11.Data(data=b"a" * 4000)) or b""
            await stream.send_all(data)
            reply = await read_reply(stream, conn)
    assert reply.status == 413


async def test_keep_alive_serves_several_requests(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            await stream.send_all(request_bytes(conn, "GET", "/healthz"))
            first = await read_reply(stream, conn)
            conn.start_next_cycle()
            await stream.send_all(request_bytes(conn, "GET", "/nope"))
            second = await read_reply(stream, conn)
    assert (first.status, second.status) == (200, 404)


async def test_slow_headers_are_cut_off(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    # The virtual clock only with the in-process bus: a real redis-server's
    # replies take real time, during which autojump would race ahead.
    bus = MemoryBus()
    with trio.fail_after(60):
        gw = await start_gateway(nursery, bus)
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        async with stream:
            await stream.send_all(b"POST /twiml HTTP/1.1\r\nHost: x\r\n")  # never finished
            conn = h11.Connection(h11.CLIENT)
            conn.send(h11.Request(method="POST", target="/twiml", headers=[("Host", "x")]))
            reply = await read_reply(stream, conn)
            rest = await stream.receive_some(100)
    assert reply.status == 408
    assert rest == b""  # and the connection is closed


async def test_malformed_request_is_400(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            conn = h11.Connection(h11.CLIENT)
            conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            reply = await read_reply(stream, conn)
    assert reply.status == 400


async def test_twiml_without_auth_token(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus)
        reply = await http(gw.port, "POST", "/twiml", form=CALL_FORM)
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/xml"
    relay = ET.fromstring(reply.body).find("Connect/ConversationRelay")
    assert relay is not None
    assert relay.get("url") == "wss://agent.example.com/relay"


def _signed(url: str, form: dict[str, str]) -> list[tuple[str, str]]:
    return [("X-Twilio-Signature", sign(TOKEN, url, form))]


async def test_webhook_signatures(nursery: trio.Nursery, bus: Bus) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus, auth_token=TOKEN)
        port = gw.port
        missing = await http(port, "POST", "/twiml", form=CALL_FORM)
        wrong = await http(
            port, "POST", "/twiml", form=CALL_FORM, headers=[("X-Twilio-Signature", "bm9wZQ==")]
        )
        # Signed over the address the server sees, not the public URL Twilio used.
        local = await http(
            port,
            "POST",
            "/twiml",
            form=CALL_FORM,
            headers=_signed(f"http://127.0.0.1:{port}/twiml", CALL_FORM),
        )
        tampered = await http(
            port,
            "POST",
            "/twiml",
            form={**CALL_FORM, "From": "+19999999999"},
            headers=_signed(f"{PUBLIC_URL}/twiml", CALL_FORM),
        )
        right = await http(
            port,
            "POST",
            "/twiml",
            form=CALL_FORM,
            headers=_signed(f"{PUBLIC_URL}/twiml", CALL_FORM),
        )
        query = await http(
            port,
            "POST",
            "/twiml?tenant=acme",
            form=CALL_FORM,
            headers=_signed(f"{PUBLIC_URL}/twiml?tenant=acme", CALL_FORM),
        )
    assert [r.status for r in (missing, wrong, local, tampered)] == [403, 403, 403, 403]
    assert right.status == 200
    assert ET.fromstring(right.body).find("Connect/ConversationRelay") is not None
    assert query.status == 200


async def test_action_and_status_callbacks(nursery: trio.Nursery, bus: Bus) -> None:
    action_form = {
        "CallSid": "CA1",
        "SessionId": "VX1",
        "SessionStatus": "ended",
        "SessionDuration": "12",
        "HandoffData": '{"reason":"agent"}',
    }
    status_form = {"CallSid": "CA1", "CallStatus": "completed"}
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus, auth_token=TOKEN)
        port = gw.port
        bad_action = await http(port, "POST", "/action", form=action_form)
        action = await http(
            port,
            "POST",
            "/action",
            form=action_form,
            headers=_signed(f"{PUBLIC_URL}/action", action_form),
        )
        bad_status = await http(
            port, "POST", "/status", form=status_form, headers=[("X-Twilio-Signature", "x")]
        )
        status = await http(
            port,
            "POST",
            "/status",
            form=status_form,
            headers=_signed(f"{PUBLIC_URL}/status", status_form),
        )
    assert bad_action.status == 403
    assert action.status == 200
    assert [child.tag for child in ET.fromstring(action.body)] == ["Hangup"]
    assert bad_status.status == 403
    assert status.status == 204


async def test_replay_stream_returns_prefix_then_delegates() -> None:
    with trio.fail_after(5):
        left, right = trio.testing.memory_stream_pair()
        replay = ReplayStream(right, b"abcdef")
        assert await replay.receive_some(4) == b"abcd"
        assert await replay.receive_some() == b"ef"
        await left.send_all(b"live")
        assert await replay.receive_some(10) == b"live"
        await replay.send_all(b"back")
        assert await left.receive_some(10) == b"back"
        await replay.aclose()


async def test_public_url_on_port_zero_names_the_bound_port(
    nursery: trio.Nursery, bus: Bus
) -> None:
    with trio.fail_after(10):
        gw = await start_gateway(nursery, bus, public_url="http://127.0.0.1:0", auth_token=TOKEN)
        url = f"http://127.0.0.1:{gw.port}/twiml"
        reply = await http(
            gw.port, "POST", "/twiml", form=CALL_FORM, headers=_signed(url, CALL_FORM)
        )
    assert reply.status == 200
    relay = ET.fromstring(reply.body).find("Connect/ConversationRelay")
    assert relay is not None
    assert relay.get("url") == f"ws://127.0.0.1:{gw.port}/relay"


def test_with_bound_port_leaves_real_ports_alone() -> None:
    config = GatewayConfig("gw", public_url="https://agent.example.com")
    assert with_bound_port(config, 4242) is config
    zero = GatewayConfig("gw", public_url="http://[::1]:0/prefix")
    assert with_bound_port(zero, 4242).public_url == "http://[::1]:4242/prefix"
