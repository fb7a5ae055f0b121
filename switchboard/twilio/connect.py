"""Placing a call as Twilio does (PROTOCOL.md §Lifecycle, §Security).

1. POST the signed voice webhook to ``<base>/twiml`` and parse the TwiML answer
   (``<Connect action>``, ``<ConversationRelay url ...>``, ``<Language>``,
   ``<Parameter>``). A relay ``url`` must be ``wss://`` (``ws://`` is allowed for
   a loopback host, for local development).
2. Open the WebSocket to the *local* address of ``base_url`` with the path of the
   TwiML ``url``, signed over that ``url`` exactly as written, then send ``setup``.

Signatures cover the *public* URL (``public_url``, default ``base_url``): the URL
Twilio would have used, not the loopback address the simulator connects to.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import trio
import trio_websocket

from relay import DEFAULT_MAX_BYTES, Setup
from relay.signature import SIGNATURE_HEADER, sign
from relay.twiml import RelayTwiml, TwimlError, check_relay_url, parse_twiml
from switchboard.twilio.call import SimulatedCall, new_sid
from switchboard.twilio.errors import RelayConnectError
from switchboard.twilio.http import API_VERSION, Origin, http_request, target
from switchboard.twilio.session import CLEANUP_TIMEOUT, Line


def _leaves(group: BaseExceptionGroup[BaseException]) -> Sequence[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


def _webhook_params(
    call_sid: str,
    account_sid: str,
    from_: str,
    to: str,
    caller_name: str,
    forwarded_from: str,
    custom: Mapping[str, str] | None,
) -> dict[str, str]:
    """The voice webhook's form parameters for an inbound call."""
    params = {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to,
        "Caller": from_,
        "Direction": "inbound",
        "From": from_,
        "To": to,
    }
    if caller_name:
        params["CallerName"] = caller_name
    if forwarded_from:
        params["ForwardedFrom"] = forwarded_from
    params.update(custom or {})
    return params


async def _answer(
    origin: Origin, public: str, params: Mapping[str, str], token: str | None, twiml: str | None
) -> RelayTwiml:
    """The relay the voice webhook's TwiML (or the given ``twiml``) connects to."""
    if twiml is None:
        response = await http_request(origin, "POST", public + "/twiml", params, token)
        twiml = response.text
    document = parse_twiml(twiml)
    if document.relay is None:
        raise TwimlError(f"TwiML from {public}/twiml starts no ConversationRelay: {document.verbs}")
    return document.relay


@asynccontextmanager
async def open_call(
    base_url: str,
    *,
    public_url: str | None = None,
    auth_token: str | None = None,
    from_: str = "+15550100",
    to: str = "+15550199",
    custom: Mapping[str, str] | None = None,
    call_sid: str | None = None,
    account_sid: str | None = None,
    caller_name: str = "",
    forwarded_from: str = "",
    call_type: str = "PSTN",
    max_frame_bytes: int = DEFAULT_MAX_BYTES,
    twiml: str | None = None,
    playback_rate: float | None = None,
    min_chunk: int = 12,
) -> AsyncIterator[SimulatedCall]:
    """Place one inbound call against the app at ``base_url`` and yield it in progress.

    ``public_url`` is the URL Twilio would use (what signatures cover); it defaults
    to ``base_url``. ``custom`` adds form parameters to the voice webhook (as a
    REST-created call's extra parameters would). On exit the caller hangs up if the
    session is still open.

    ``twiml`` skips the voice webhook and uses this TwiML instead, for servers
    that only speak the relay WebSocket (bare baselines in benchmarks).

    ``playback_rate`` (characters per second) switches on timed playback
    (:class:`~switchboard.twilio.playback.TimedPlayback`, needed for
    :meth:`SimulatedCall.barge_in`); ``min_chunk`` is its shortest synthesized
    chunk. Default: instant playback.

    Raises :class:`HttpError`, :class:`TwimlError` or :class:`RelayConnectError`
    if the call cannot be connected.
    """
    origin = Origin.parse(base_url)
    public = (public_url or base_url).rstrip("/")
    call_sid = call_sid or new_sid("CA")
    account_sid = account_sid or new_sid("AC")
    params = _webhook_params(call_sid, account_sid, from_, to, caller_name, forwarded_from, custom)
    relay = await _answer(origin, public, params, auth_token, twiml)
    setup = Setup(
        session_id=new_sid("VX"),
        call_sid=call_sid,
        account_sid=account_sid,
        from_=from_,
        to=to,
        forwarded_from=forwarded_from,
        caller_name=caller_name,
        direction="inbound",
        call_type=call_type,
        call_status="RINGING",
        custom_parameters=relay.parameters,
    )
    line = Line(origin, public, auth_token, params, max_frame_bytes, playback_rate, min_chunk)
    async with open_session(line, relay, setup) as call:
        yield call


@asynccontextmanager
async def open_session(line: Line, relay: RelayTwiml, setup: Setup) -> AsyncIterator[SimulatedCall]:
    """One relay session: the signed upgrade, ``setup``, the reader; hang up on exit."""
    check_relay_url(relay.url)
    headers = (
        [(SIGNATURE_HEADER.encode(), sign(line.auth_token, relay.url).encode())]
        if line.auth_token
        else []
    )
    try:
        async with (
            _open_relay_socket(line.origin, relay.url, headers, line.max_frame_bytes) as ws,
            trio.open_nursery() as nursery,
        ):
            call = SimulatedCall(line=line, twiml=relay, setup=setup, ws=ws)
            await call.start(nursery)
            try:
                yield call
            finally:
                if not call._finishing:
                    with trio.move_on_after(CLEANUP_TIMEOUT) as scope:
                        scope.shield = True
                        await call.hangup()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The reader task does not raise, so a group here wraps one exception from
        # the caller's block (or a cancellation): give it back unwrapped, as the
        # caller raised it. (except* cannot re-raise a leaf without re-wrapping.)
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


@asynccontextmanager
async def _open_relay_socket(
    origin: Origin,
    relay_url: str,
    headers: list[tuple[bytes, bytes]],
    max_frame_bytes: int,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """The relay WebSocket: to the local origin, with the path of the TwiML url."""
    ssl_context: ssl.SSLContext | bool = ssl.create_default_context() if origin.tls else False
    connected = False
    try:
        async with trio_websocket.open_websocket(
            origin.host,
            origin.port,
            target(relay_url),
            use_ssl=ssl_context,
            extra_headers=headers,
            # Frames over the limit must reach TwilioSide to be judged, not kill the socket.
            max_message_size=max(4 * max_frame_bytes, 1024 * 1024),
            connect_timeout=10,
            disconnect_timeout=CLEANUP_TIMEOUT,
        ) as ws:
            connected = True
            yield ws
    except trio_websocket.ConnectionRejected as exc:
        if connected:
            raise
        raise RelayConnectError(
            f"relay upgrade to {relay_url} rejected with HTTP {exc.status_code}", exc.status_code
        ) from None
    except (trio_websocket.HandshakeError, OSError) as exc:
        if connected:
            raise
        raise RelayConnectError(f"relay upgrade to {relay_url} failed: {exc!r}") from None
