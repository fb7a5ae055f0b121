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
    actor.add_argument("name", help="conversation | llm")
    actor.add_argument("--redis", help="Redis URL (SWITCHBOARD_REDIS_URL)")

    call = sub.add_parser("call", help="a terminal phone: talk to an agent as a caller")
    call.add_argument("--url", default="http://127.0.0.1:8080", help="the agent's base URL")
    call.add_argument(
        "--public-url",
        help="the URL Twilio would use (what signatures cover); defaults to --url",
    )
    call.add_argument("--from", dest="from_", default="+15550100", help="caller number")
    call.add_argument("--to", default="+15550199", help="called number")
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
    if args.command == "call" and not env.get("SWITCHBOARD_LOG_LEVEL"):
        # The phone's screen is the conversation; only problems go to the log.
        level = "warning"
    configure_logging(level, settings.log_format)
    log = structlog.get_logger()

    from switchboard import runner

    try:
        if args.command == "dev":
            trio.run(runner.run_dev, settings)
        elif args.command == "gateway":
            trio.run(runner.run_gateway, settings)
        elif args.command == "actor":
            if args.name not in runner.BUILTIN_ACTORS:
                sys.stderr.write(
                    f"switchboard: unknown actor {args.name!r} "
                    f"(built-in: {', '.join(runner.BUILTIN_ACTORS)})\n"
                )
                return 2
            trio.run(runner.run_actor, settings, args.name)
        elif args.command == "call":
            from switchboard.phone import run_phone

            trio.run(
                lambda: run_phone(
                    args.url,
                    public_url=args.public_url,
                    auth_token=settings.twilio_auth_token,
                    from_=args.from_,
                    to=args.to,
                )
            )
    except KeyboardInterrupt:
        log.info("interrupted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
