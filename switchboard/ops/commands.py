"""``switchboard replay`` and ``switchboard tail``: from Redis, or a running process.

With ``url`` they read a running process's operator API; otherwise Redis,
with one line that says what to do when it cannot be read.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable

import trio

from bus.base import BusError
from switchboard.settings import Settings
from switchboard.startup import open_bus


async def run_replay(
    settings: Settings,
    call: str,
    as_json: bool,
    rerun: bool,
    export: str | None,
    url: str | None = None,
) -> int:
    """``switchboard replay CALLSID``: read the call from Redis, or with ``url`` from a
    running process's operator API (``switchboard.ops.replay``)."""
    from switchboard.operator_api import HttpStreams, OperatorApi, OperatorApiError
    from switchboard.ops.replay import run_replay as replay

    if url is not None:
        streams = HttpStreams(OperatorApi(url, settings.dashboard_token))
        try:
            return await replay(
                streams,
                await streams.keys(),
                call,
                as_json=as_json,
                rerun_config=settings.conversation_config() if rerun else None,
                export_path=export,
            )
        except OperatorApiError as exc:
            sys.stderr.write(f"switchboard replay: {exc}\n")
            return 1
    try:
        async with open_bus(settings) as bus:
            return await replay(
                bus,
                settings.keys,
                call,
                as_json=as_json,
                rerun_config=settings.conversation_config() if rerun else None,
                export_path=export,
            )
    except (BusError, OSError) as exc:
        sys.stderr.write(
            f"switchboard replay: cannot read {settings.redis_url} ({exc}); for a "
            "`switchboard dev` process (`make run`) use --url http://127.0.0.1:8080\n"
        )
        return 1


async def run_tail(
    settings: Settings, call: str | None, kind: str | None, url: str | None = None
) -> int:
    """``switchboard tail``: follow Redis, or with ``url`` a running process's operator
    API, until SIGINT or SIGTERM (``switchboard.ops.tail``); exit 0 then."""
    return await until_signalled(lambda: _tail(settings, call, kind, url))


async def until_signalled(follow: Callable[[], Awaitable[int]]) -> int:
    """``follow()``'s exit status, or 0 once SIGINT or SIGTERM stopped it.

    The signals are received here, not left to Python's Ctrl-C handling:
    a job started in the background by a shell without job control (a
    script's ``switchboard tail ... &``, a CI step) inherits SIGINT ignored,
    and Trio only turns SIGINT into ``KeyboardInterrupt`` where Python's
    default handler is installed, so such a tail never stopped. What
    ``follow`` raises comes out as itself.
    """
    done: list[int] = []
    failed: list[Exception] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                try:
                    done.append(await follow())
                except Exception as exc:
                    failed.append(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    if failed:
        raise failed[0]
    return done[0] if done else 0


async def _tail(settings: Settings, call: str | None, kind: str | None, url: str | None) -> int:
    from switchboard.operator_api import OperatorApi, OperatorApiError, run_tail_url
    from switchboard.ops.tail import run_tail as tail

    if url is not None:
        try:
            await run_tail_url(OperatorApi(url, settings.dashboard_token), call=call, kind=kind)
        except OperatorApiError as exc:
            sys.stderr.write(f"switchboard tail: {exc}\n")
            return 1
        return 0
    try:
        async with open_bus(settings) as bus:
            await tail(bus, settings.keys, call=call, kind=kind)
    except (BusError, OSError) as exc:
        sys.stderr.write(
            f"switchboard tail: cannot read {settings.redis_url} ({exc}); for a "
            "`switchboard dev` process (`make run`) use --url http://127.0.0.1:8080\n"
        )
        return 1
    return 0
