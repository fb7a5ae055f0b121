"""Who may see the dashboard: the token rules of ``gateway.dashboard.DashboardAccess``.

- With ``SWITCHBOARD_DASHBOARD_TOKEN`` set every route needs it (bearer
  header or ``?token=``); without it: 401, and the WebSocket is refused
  before it becomes a socket.
- Without a token: open on dev and on an unsigned gateway, absent (404) on a
  signed (production) gateway.
"""

from __future__ import annotations

import pytest
import trio
import trio_websocket
from dashkit import running_gateway

from switchboard.metrics_http import fetch
from switchboard.operator_api import OperatorApi, OperatorApiError

TWILIO_TOKEN = "twilio-auth-token"
DASH_TOKEN = "s3cret-dashboard-token"


async def test_a_signed_gateway_without_a_dashboard_token_has_no_dashboard() -> None:
    with trio.fail_after(10):
        async with running_gateway(auth_token=TWILIO_TOKEN) as port:
            for path in ("/dashboard", "/dashboard/app.js", "/api/calls", "/api/range?stream=x"):
                status, _ = await fetch("127.0.0.1", port, path)
                assert status == 404, path
            with pytest.raises(OperatorApiError, match="SWITCHBOARD_DASHBOARD_TOKEN"):
                await OperatorApi(f"http://127.0.0.1:{port}").get("/api/calls")
            with pytest.raises(trio_websocket.HandshakeError):
                async with trio_websocket.open_websocket_url(
                    f"ws://127.0.0.1:{port}/dashboard/live"
                ):
                    pass


async def test_with_a_token_every_data_route_asks_for_it() -> None:
    with trio.fail_after(10):
        async with running_gateway(auth_token=TWILIO_TOKEN, dashboard_token=DASH_TOKEN) as port:
            base = f"http://127.0.0.1:{port}"
            status, _ = await fetch("127.0.0.1", port, "/api/calls")
            assert status == 401
            status, _ = await fetch("127.0.0.1", port, "/api/calls?token=wrong")
            assert status == 401
            with pytest.raises(OperatorApiError, match="wants the dashboard token"):
                await OperatorApi(base, "wrong").get("/api/calls")
            by_header = await OperatorApi(base, DASH_TOKEN).get("/api/calls")
            assert by_header["calls"] == []
            status, body = await fetch("127.0.0.1", port, f"/api/calls?token={DASH_TOKEN}")
            assert status == 200 and '"calls":[]' in body
            # The page itself holds no data; its data comes over the guarded routes.
            status, page = await fetch("127.0.0.1", port, "/dashboard")
            assert status == 200 and "/dashboard/app.js" in page
            with pytest.raises(trio_websocket.HandshakeError):
                async with trio_websocket.open_websocket_url(
                    f"ws://127.0.0.1:{port}/dashboard/live"
                ):
                    pass
            url = f"ws://127.0.0.1:{port}/dashboard/live?token={DASH_TOKEN}"
            async with trio_websocket.open_websocket_url(url) as ws:
                assert '"type":"snapshot"' in await ws.get_message()


async def test_an_unsigned_gateway_is_open_and_streams_outside_the_namespace_are_refused() -> None:
    with trio.fail_after(10):
        async with running_gateway() as port:
            api = OperatorApi(f"http://127.0.0.1:{port}")
            streams = (await api.get("/api/streams"))["streams"]
            assert "sb:{events}" in streams and "sb:{gw:gw-dash}:out" in streams
            with pytest.raises(OperatorApiError, match="not a stream of this namespace"):
                await api.get("/api/range", stream="other:key")
            with pytest.raises(OperatorApiError, match="not in the recent calls"):
                await api.get("/api/call", sid="CAnope")
