"""Webhooks as Twilio makes them: one retry when the connection fails, none on an HTTP error.

Twilio's defaults ("Webhooks connection overrides"): 5 s to connect, 15 s for
everything, one retry when the connection fails. A gateway killed while a
callback was on its way reset that connection; Twilio tries once more
(through the load balancer, to a live gateway), and so does the simulator.
Loopback servers on port 0, a Trio-clock guard on each test.
"""

from __future__ import annotations

import trio

from switchboard.twilio.errors import ConnectionFailed, HttpError
from switchboard.twilio.http import Origin, http_request

TWIML = b"<Response><Hangup/></Response>"


async def _server(
    answers: list[bytes | None], seen: list[int], *, task_status: trio.TaskStatus[int]
) -> None:
    """Answers connection ``n`` with ``answers[n]``; None: closes it unanswered
    (a server that died after accepting it)."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            n = len(seen)
            seen.append(n)
            await stream.receive_some(65536)
            answer = answers[min(n, len(answers) - 1)]
            if answer is not None:
                await stream.send_all(answer)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def _response(status: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body


async def _post(answers: list[bytes | None]) -> tuple[bytes | Exception, list[int]]:
    """POST to a server answering ``answers``: the body (or the error) and the
    connections it saw."""
    seen: list[int] = []
    outcome: bytes | Exception = b""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_server, answers, seen)
            url = f"http://127.0.0.1:{port}"
            try:
                response = await http_request(Origin.parse(url), "POST", url + "/action", {}, None)
                outcome = response.body
            except (ConnectionFailed, HttpError) as exc:
                outcome = exc
            nursery.cancel_scope.cancel()
    return outcome, seen


async def test_a_connection_that_fails_before_the_answer_is_tried_once_more() -> None:
    body, seen = await _post([None, _response(b"200 OK", TWIML)])
    assert body == TWIML and len(seen) == 2


async def test_the_retry_is_the_only_one() -> None:
    error, seen = await _post([None])
    assert isinstance(error, ConnectionFailed) and len(seen) == 2


async def test_an_http_error_is_not_retried() -> None:
    error, seen = await _post([_response(b"500 Internal Server Error", b"")])
    assert isinstance(error, HttpError) and len(seen) == 1
