"""The ``switchboard`` command line's arguments: one function per subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_URL_HELP = "a running `switchboard dev` (make run), e.g. http://127.0.0.1:8080"
_REDIS_HELP = "Redis URL (SWITCHBOARD_REDIS_URL)"


def _version() -> str:
    """The installed distribution's version (whatever it is named on PyPI)."""
    from importlib import metadata

    for name in metadata.packages_distributions().get("switchboard", []):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "switchboard (not installed)"


def _dev(sub: Subparsers) -> None:
    dev = sub.add_parser("dev", help="run everything in one process on the in-memory bus")
    dev.add_argument("--host", help="address to listen on (SWITCHBOARD_HOST)")
    dev.add_argument("--port", type=int, help="port to listen on (SWITCHBOARD_PORT, 8080)")


def _gateway(sub: Subparsers) -> None:
    gw = sub.add_parser("gateway", help="run the gateway (WebSocket + webhooks) against Redis")
    gw.add_argument("--host", help="address to listen on (SWITCHBOARD_HOST)")
    gw.add_argument("--port", type=int, help="port to listen on (SWITCHBOARD_PORT, 8080)")
    gw.add_argument("--redis", help=_REDIS_HELP)


def _actor(sub: Subparsers) -> None:
    actor = sub.add_parser("actor", help="run one actor role against Redis")
    actor.add_argument("name", help="conversation | llm | telemetry | otel | an installed plug-in")
    actor.add_argument("--redis", help=_REDIS_HELP)


def _replay(sub: Subparsers) -> None:
    replay = sub.add_parser("replay", help="rebuild one call's timeline from the streams")
    replay.add_argument("call_sid", help="the call's CallSid (CA...)")
    replay.add_argument("--json", action="store_true", help="JSON for tools instead of text")
    replay.add_argument(
        "--rerun",
        action="store_true",
        help="re-drive the call through today's conversation actor and show what changed",
    )
    replay.add_argument(
        "--export", metavar="FILE", help="write the call as a scenario file (-: stdout)"
    )
    replay.add_argument("--redis", help=_REDIS_HELP)
    replay.add_argument("--url", help=_URL_HELP)


def _calls(sub: Subparsers) -> None:
    calls = sub.add_parser("calls", help="list recent calls, newest first, with their problems")
    calls.add_argument("--url", help=_URL_HELP)
    calls.add_argument("--redis", help=_REDIS_HELP)
    calls.add_argument("--json", action="store_true", help="JSON for tools instead of text")
    calls.add_argument("--limit", type=int, default=50, help="at most this many calls (50)")
    calls.add_argument(
        "--since", type=float, default=60.0, help="minutes of the streams to read (Redis; 60)"
    )


def _tail(sub: Subparsers) -> None:
    tail = sub.add_parser("tail", help="follow live entries on every stream")
    tail.add_argument("--call", help="only this call sid")
    tail.add_argument("--kind", help="only this kind or fact (prefix: llm, call, event)")
    tail.add_argument("--redis", help=_REDIS_HELP)
    tail.add_argument("--url", help=_URL_HELP)


def _call(sub: Subparsers) -> None:
    call = sub.add_parser("call", help="a terminal phone: talk to an agent as a caller")
    call.add_argument("--url", default="http://127.0.0.1:8080", help="the agent's base URL")
    call.add_argument(
        "--public-url",
        help="the URL Twilio would use (what signatures cover); defaults to --url",
    )
    call.add_argument("--from", dest="from_", default="+15550100", help="caller number")
    call.add_argument("--to", default="+15550199", help="called number")
    call.add_argument(
        "--speech-rate",
        type=float,
        default=None,
        help="characters a second the agent's replies are 'spoken' at, which is what "
        "typing over the agent interrupts (default SWITCHBOARD_SPEECH_CHARS_PER_S, 14: ~150 "
        "words a minute; 0: no speech timing, lines typed mid-reply go as plain prompts)",
    )


def _simulate(sub: Subparsers) -> None:
    sim = sub.add_parser(
        "simulate", help="load-test: many Twilio-faithful calls at once, checked and measured"
    )
    sim.add_argument("--url", default="http://127.0.0.1:8080", help="the agent's base URL")
    sim.add_argument("--public-url", help="the URL Twilio would use (what signatures cover)")
    sim.add_argument("--scenario", required=True, help="scenario file (.json or .toml)")
    sim.add_argument("--calls", type=int, default=10, help="calls in total")
    sim.add_argument("--concurrency", type=int, default=10, help="calls at once")
    sim.add_argument("--ramp", type=float, default=0.0, help="seconds to start the first wave")
    sim.add_argument("--json", dest="json_out", help="write the report as JSON here (-: stdout)")
    sim.add_argument("--plot", dest="plot_out", help="write an SVG picture here (-: stdout)")
    sim.add_argument("--seed", type=int, default=0, help="seed for the pacing jitter")
    sim.add_argument(
        "--content",
        choices=("scripted", "any"),
        default="scripted",
        help="check replies against the scripted provider (default) or not at all",
    )
    sim.add_argument(
        "--provider-ttft-ms",
        type=float,
        help="provider time to first token subtracted for 'overhead' "
        "(default SWITCHBOARD_SCRIPTED_FIRST_TOKEN_MS)",
    )
    sim.add_argument("--turn-timeout", type=float, default=30.0, help="seconds per reply")
    sim.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="drive the calls from this many client processes (one Python process "
        "saturates before the servers do at ~1,000 calls); results are merged",
    )


SUBCOMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    _dev,
    _gateway,
    _actor,
    _replay,
    _calls,
    _tail,
    _call,
    _simulate,
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, subcommands in the order ``--help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="A backend for AI voice agents on Twilio ConversationRelay.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not one line"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser
