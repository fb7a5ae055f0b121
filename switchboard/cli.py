"""The ``switchboard`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import structlog
import trio

from switchboard.logging import configure_logging
from switchboard.settings import Settings, SettingsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="A backend for AI voice agents on Twilio ConversationRelay.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run everything in one process on the in-memory bus")
    dev.add_argument("--host", help="address to listen on (SWITCHBOARD_HOST)")
    dev.add_argument("--port", type=int, help="port to listen on (SWITCHBOARD_PORT, 8080)")

    gw = sub.add_parser("gateway", help="run the gateway (WebSocket + webhooks) against Redis")
    gw.add_argument("--host", help="address to listen on (SWITCHBOARD_HOST)")
    gw.add_argument("--port", type=int, help="port to listen on (SWITCHBOARD_PORT, 8080)")
    gw.add_argument("--redis", help="Redis URL (SWITCHBOARD_REDIS_URL)")

    actor = sub.add_parser("actor", help="run one actor role against Redis")
    actor.add_argument("name", help="conversation | llm | telemetry | an installed plug-in")
    actor.add_argument("--redis", help="Redis URL (SWITCHBOARD_REDIS_URL)")

    replay = sub.add_parser("replay", help="rebuild one call's timeline from the streams")
    replay.add_argument("call_sid", help="the call's CallSid (CA...)")
    replay.add_argument("--json", action="store_true", help="JSON for tools instead of text")
    replay.add_argument(
        "--rerun",
        action="store_true",
        help="re-drive the call through today's conversation actor and show what changed",
    )
    replay.add_argument("--export", metavar="FILE", help="write the call as a scenario file")
    replay.add_argument("--redis", help="Redis URL (SWITCHBOARD_REDIS_URL)")

    tail = sub.add_parser("tail", help="follow live entries on every stream")
    tail.add_argument("--call", help="only this call sid")
    tail.add_argument("--kind", help="only this kind or fact (prefix: llm, call, event)")
    tail.add_argument("--redis", help="Redis URL (SWITCHBOARD_REDIS_URL)")

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
        default=15.0,
        help="characters a second the agent's replies are 'spoken' at, which is what "
        "typing over the agent interrupts (default 15, ~150 words a minute; 0: no "
        "speech timing, lines typed mid-reply go as plain prompts)",
    )

    sim = sub.add_parser(
        "simulate", help="load-test: many Twilio-faithful calls at once, checked and measured"
    )
    sim.add_argument("--url", default="http://127.0.0.1:8080", help="the agent's base URL")
    sim.add_argument("--public-url", help="the URL Twilio would use (what signatures cover)")
    sim.add_argument("--scenario", required=True, help="scenario file (.json or .toml)")
    sim.add_argument("--calls", type=int, default=10, help="calls in total")
    sim.add_argument("--concurrency", type=int, default=10, help="calls at once")
    sim.add_argument("--ramp", type=float, default=0.0, help="seconds to start the first wave")
    sim.add_argument("--json", dest="json_out", help="write the report as JSON here")
    sim.add_argument("--plot", dest="plot_out", help="write an SVG picture here")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    # Command-line flags override their environment variables, before parsing,
    # so derived settings (the public URL follows the port) stay consistent.
    env = dict(os.environ)
    if getattr(args, "host", None):
        env["SWITCHBOARD_HOST"] = args.host
    if getattr(args, "port", None) is not None:
        env["SWITCHBOARD_PORT"] = str(args.port)
    if getattr(args, "redis", None):
        env["SWITCHBOARD_REDIS_URL"] = args.redis
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        sys.stderr.write(f"switchboard: {exc}\n")
        return 2
    level = settings.log_level
    if args.command in ("call", "simulate") and not env.get("SWITCHBOARD_LOG_LEVEL"):
        # The phone's screen is the conversation; only problems go to the log.
        level = "warning"
    if args.command in ("replay", "tail") and not env.get("SWITCHBOARD_LOG_LEVEL"):
        level = "warning"  # stdout is the report; the log only for problems
    configure_logging(level, settings.log_format)
    log = structlog.get_logger()

    from switchboard import runner

    try:
        if args.command == "dev":
            trio.run(runner.run_dev, settings)
        elif args.command == "gateway":
            trio.run(runner.run_gateway, settings)
        elif args.command == "actor":
            from actors import plugins

            installed = plugins.available()
            if args.name not in runner.BUILTIN_ACTORS and args.name not in installed:
                sys.stderr.write(
                    f"switchboard: unknown actor {args.name!r} "
                    f"(built-in: {', '.join(runner.BUILTIN_ACTORS)}; "
                    f"plug-ins: {', '.join(sorted(installed)) or 'none installed'})\n"
                )
                return 2
            try:
                trio.run(runner.run_actor, settings, args.name)
            except plugins.PluginError as exc:
                sys.stderr.write(f"switchboard: {exc}\n")
                return 2
        elif args.command == "replay":
            code: int = trio.run(
                runner.run_replay, settings, args.call_sid, args.json, args.rerun, args.export
            )
            return code
        elif args.command == "tail":
            from switchboard.tail import run_tail

            trio.run(
                lambda: run_tail(settings.redis_url, settings.keys, call=args.call, kind=args.kind)
            )
        elif args.command == "call":
            from switchboard.phone import run_phone

            trio.run(
                lambda: run_phone(
                    args.url,
                    public_url=args.public_url,
                    auth_token=settings.twilio_auth_token,
                    from_=args.from_,
                    to=args.to,
                    speech_rate=args.speech_rate if args.speech_rate > 0 else None,
                )
            )
        elif args.command == "simulate":
            from switchboard import simulate

            ttft = args.provider_ttft_ms
            return simulate.main(
                url=args.url,
                scenario_path=args.scenario,
                calls=args.calls,
                concurrency=args.concurrency,
                public_url=args.public_url,
                auth_token=settings.twilio_auth_token,
                json_out=args.json_out,
                plot_out=args.plot_out,
                seed=args.seed,
                ramp_s=args.ramp,
                content=args.content,
                provider_ttft_ms=settings.scripted_first_token_ms if ttft is None else ttft,
                turn_timeout_s=args.turn_timeout,
                client_processes=args.client_processes,
            )
    except KeyboardInterrupt:
        log.info("interrupted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
