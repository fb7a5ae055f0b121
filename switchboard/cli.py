"""The ``switchboard`` command line.

Settings come from the environment laid over a ``.env`` file in the current
directory (or the file ``SWITCHBOARD_ENV_FILE`` names; the environment
wins), and command-line flags over both; they are validated once
(``switchboard.settings``).

A person's mistake ends in one line on stderr that says what to do, and exit
status 2: bad settings, a port in use, an agent that cannot be reached, a
call refused with 403. ``--debug`` shows the traceback instead. Commands
that do not run the model (``call``, ``simulate``, ``replay``, ``tail``)
never import a model SDK, so they start quickly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import structlog
import trio

from switchboard.logging import configure_logging
from switchboard.settings import Settings, SettingsError

# How long `call` and `simulate` retry an agent that refuses connections (it
# may be starting up) before they give up with one line.
CONNECT_RETRY_S = 5.0
ENV_FILE = ".env"


class UsageError(Exception):
    """A mistake the person running the command can fix; the message says how."""


def _version() -> str:
    """The installed distribution's version (whatever it is named on PyPI)."""
    from importlib import metadata

    for name in metadata.packages_distributions().get("switchboard", []):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "switchboard (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="A backend for AI voice agents on Twilio ConversationRelay.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not one line"
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
    actor.add_argument("name", help="conversation | llm | telemetry | otel | an installed plug-in")
    actor.add_argument("--redis", help="Redis URL (SWITCHBOARD_REDIS_URL)")

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
    replay.add_argument("--redis", help="Redis URL (SWITCHBOARD_REDIS_URL)")
    replay.add_argument(
        "--url", help="a running `switchboard dev` (make run), e.g. http://127.0.0.1:8080"
    )

    calls = sub.add_parser("calls", help="list recent calls, newest first, with their problems")
    calls.add_argument(
        "--url", help="a running `switchboard dev` (make run), e.g. http://127.0.0.1:8080"
    )
    calls.add_argument("--redis", help="Redis URL (SWITCHBOARD_REDIS_URL)")
    calls.add_argument("--json", action="store_true", help="JSON for tools instead of text")
    calls.add_argument("--limit", type=int, default=50, help="at most this many calls (50)")
    calls.add_argument(
        "--since", type=float, default=60.0, help="minutes of the streams to read (Redis; 60)"
    )

    tail = sub.add_parser("tail", help="follow live entries on every stream")
    tail.add_argument("--call", help="only this call sid")
    tail.add_argument("--kind", help="only this kind or fact (prefix: llm, call, event)")
    tail.add_argument("--redis", help="Redis URL (SWITCHBOARD_REDIS_URL)")
    tail.add_argument(
        "--url", help="a running `switchboard dev` (make run), e.g. http://127.0.0.1:8080"
    )

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
    return parser


def read_env(
    path: str | Path = ENV_FILE, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment laid over the ``.env`` file at ``path`` (if there is one).

    A variable set in the environment, even to an empty string, wins over the
    file, as python-dotenv's ``load_dotenv`` does by default.
    """
    environ = os.environ if environ is None else environ
    env: dict[str, str] = {}
    if Path(path).is_file():
        from dotenv import dotenv_values

        env.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    env.update(environ)
    return env


def _speech_rate(flag: float | None, settings: Settings) -> float | None:
    """``switchboard call``'s playback rate: the flag, else the setting; 0 is off."""
    rate = settings.speech_chars_per_second if flag is None else flag
    return rate if rate > 0 else None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except UsageError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"switchboard {args.command}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    # Command-line flags override their environment variables, before parsing,
    # so derived settings (the public URL follows the port) stay consistent.
    env = read_env(os.environ.get("SWITCHBOARD_ENV_FILE") or ENV_FILE)
    if getattr(args, "host", None):
        env["SWITCHBOARD_HOST"] = args.host
    if getattr(args, "port", None) is not None:
        env["SWITCHBOARD_PORT"] = str(args.port)
    if getattr(args, "redis", None):
        env["SWITCHBOARD_REDIS_URL"] = args.redis
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        raise UsageError(str(exc)) from exc
    level = settings.log_level
    if args.command in ("call", "simulate") and not env.get("SWITCHBOARD_LOG_LEVEL"):
        # The phone's screen is the conversation; only problems go to the log.
        level = "warning"
    if args.command in ("replay", "tail", "calls") and not env.get("SWITCHBOARD_LOG_LEVEL"):
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
            builtin = (*runner.BUILTIN_ACTORS, *runner.OPTIONAL_ACTORS)
            if args.name not in builtin and args.name not in installed:
                raise UsageError(
                    f"unknown actor {args.name!r} "
                    f"(built-in: {', '.join(builtin)}; "
                    f"plug-ins: {', '.join(sorted(installed)) or 'none installed'})"
                )
            try:
                trio.run(runner.run_actor, settings, args.name)
            except plugins.PluginError as exc:
                raise UsageError(str(exc)) from exc
        elif args.command == "replay":
            code: int = trio.run(
                runner.run_replay,
                settings,
                args.call_sid,
                args.json,
                args.rerun,
                args.export,
                args.url,
            )
            return code
        elif args.command == "calls":
            from switchboard.calls import run_calls

            calls_code: int = trio.run(
                lambda: run_calls(
                    settings,
                    url=args.url,
                    as_json=args.json,
                    limit=args.limit,
                    since_min=args.since,
                )
            )
            return calls_code
        elif args.command == "tail":
            tailed: int = trio.run(runner.run_tail, settings, args.call, args.kind, args.url)
            return tailed
        elif args.command == "call":
            from switchboard.twilio.phone import run_phone

            async def phone() -> None:
                await wait_reachable(args.url)
                await run_phone(
                    args.url,
                    public_url=args.public_url,
                    auth_token=settings.twilio_auth_token,
                    from_=args.from_,
                    to=args.to,
                    speech_rate=_speech_rate(args.speech_rate, settings),
                )

            try:
                trio.run(phone)
            except Exception as exc:
                refused = _refusal(args.url, exc)
                if refused is None:
                    raise
                raise refused from exc
        elif args.command == "simulate":
            from switchboard import simulate
            from switchboard.twilio.scenario import ScenarioError, load_scenario

            try:  # a bad scenario is a mistake to report before anything else
                load_scenario(args.scenario)
            except ScenarioError as exc:
                raise UsageError(str(exc)) from exc
            trio.run(wait_reachable, args.url)
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
    except BaseExceptionGroup as group:
        # A usage error raised inside a nursery arrives wrapped; unwrap it.
        found = _leaf(group, UsageError) or _leaf(group, runner.StartupError)
        if found is None:
            raise
        raise UsageError(str(found)) from group
    except runner.StartupError as exc:
        raise UsageError(str(exc)) from exc
    except KeyboardInterrupt:
        log.info("interrupted")
    return 0


def _leaf(group: BaseExceptionGroup[BaseException], kind: type[Exception]) -> Exception | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = _leaf(exc, kind)
            if inner is not None:
                return inner
        elif isinstance(exc, kind):
            return exc
    return None


async def wait_reachable(url: str, retry_s: float = CONNECT_RETRY_S) -> None:
    """Return once the agent at ``url`` accepts a TCP connection.

    Refused or unreachable: retried every quarter second for ``retry_s`` (the
    agent may be starting), then a ``UsageError`` that says what to do.
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise UsageError(f"--url must look like http://host:port, got {url!r}")
    host = parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    last: OSError | None = None
    with trio.move_on_after(retry_s):
        while True:
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError as exc:
                last = exc
                await trio.sleep(0.25)
                continue
            await stream.aclose()
            return
    reason = last.strerror if last is not None and last.strerror else "no answer"
    raise UsageError(
        f"cannot reach the agent at {url} ({reason}); start it (switchboard dev, or "
        "make run) or point --url at it"
    )


def _refusal(url: str, exc: BaseException) -> UsageError | None:
    """The one line for a simulated call the agent refused, or None for another error."""
    from switchboard.twilio import HttpError, RelayConnectError, SimulatorError

    leaf = _leaf(exc, SimulatorError) if isinstance(exc, BaseExceptionGroup) else exc
    if isinstance(leaf, HttpError | RelayConnectError):
        status = leaf.status if isinstance(leaf, HttpError) else leaf.status_code
        if status == 403:
            return UsageError(
                f"the agent at {url} refused the call (HTTP 403: the Twilio signature "
                "did not match); set TWILIO_AUTH_TOKEN to the server's auth token (and "
                "--public-url to its SWITCHBOARD_PUBLIC_URL if it has one)"
            )
    if isinstance(leaf, SimulatorError):
        return UsageError(str(leaf))
    return None


if __name__ == "__main__":
    raise SystemExit(main())
