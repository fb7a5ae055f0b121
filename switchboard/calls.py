"""``switchboard calls``: recent calls, newest first, with what went wrong.

One line per call: CallSid, start, duration, turns, from and to, how it
ended and its problems (errors, dead letters, apologies). The CallSid is
what ``switchboard replay`` takes.

Two sources, one story: against Redis (the settings' URL or ``--redis``)
the streams are read back ``--since`` minutes with ``Bus.range`` and folded
by the same :class:`gateway.dashboard.calllog.CallLog` the dashboard uses; against a
running ``dev`` process (``--url``) its ``/api/calls`` answers, since its bus
lives in its memory.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from bus.base import Bus, BusError
from bus.envelope import now_ms
from bus.keys import Keys
from gateway.dashboard import load_call_log
from switchboard.operator_api import OperatorApi, OperatorApiError
from switchboard.settings import Settings

DEFAULT_SINCE_MIN = 60.0


async def calls_from_bus(
    bus: Bus, keys: Keys, *, since_min: float = DEFAULT_SINCE_MIN, limit: int | None = None
) -> list[dict[str, Any]]:
    """Summaries of the calls on the streams of the last ``since_min`` minutes."""
    now = now_ms()
    log, _ = await load_call_log(bus, keys, since_ms=int(now - since_min * 60_000))
    return [dict(summary) for summary in log.summaries(now, limit=limit)]


async def calls_from_url(api: OperatorApi, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Summaries as a running process's ``/api/calls`` reports them."""
    data = await api.get("/api/calls", limit=limit)
    calls: list[dict[str, Any]] = data["calls"]
    return calls


def _start(ms: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def format_calls(calls: list[dict[str, Any]]) -> str:
    """A table for the terminal; the first column is the CallSid to replay."""
    if not calls:
        return "no calls in this window (--since widens it)"
    header = (
        f"{'CALLSID':<34}  {'START':<19}  {'DURATION':>8}  {'TURNS':>5}  "
        f"{'FROM -> TO':<27}  {'ENDED':<26}  PROBLEMS"
    )
    lines = [header]
    for c in calls:
        duration = "-" if c.get("duration_s") is None else f"{c['duration_s']:.1f}s"
        who = f"{c.get('from') or '?'} -> {c.get('to') or '?'}"
        problems = ", ".join(c.get("problems") or []) or "-"
        lines.append(
            f"{c['call']:<34}  {_start(c['start_ms']):<19}  {duration:>8}  {c['turns']:>5}  "
            f"{who:<27}  {c['outcome']:<26}  {problems}"
        )
    return "\n".join(lines)


def write_calls(calls: list[dict[str, Any]], *, as_json: bool, out: TextIO = sys.stdout) -> None:
    if as_json:
        out.write(json.dumps({"calls": calls}, ensure_ascii=False) + "\n")
    else:
        out.write(format_calls(calls) + "\n")


async def run_calls(
    settings: Settings,
    *,
    url: str | None,
    as_json: bool,
    limit: int | None,
    since_min: float,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """What ``switchboard calls`` does; returns the exit code."""
    from switchboard.startup import open_bus

    try:
        if url is not None:
            calls = await calls_from_url(OperatorApi(url, settings.dashboard_token), limit=limit)
        else:
            async with open_bus(settings) as bus:
                calls = await calls_from_bus(bus, settings.keys, since_min=since_min, limit=limit)
    except OperatorApiError as exc:
        err.write(f"switchboard calls: {exc}\n")
        return 1
    except (BusError, OSError) as exc:
        err.write(
            f"switchboard calls: cannot read {settings.redis_url} ({exc}); for a "
            "`switchboard dev` process (`make run`) use --url http://127.0.0.1:8080\n"
        )
        return 1
    write_calls(calls, as_json=as_json, out=out)
    return 0
