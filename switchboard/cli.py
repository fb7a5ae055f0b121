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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import structlog
import trio

from switchboard.cli_parser import build_parser
from switchboard.logging import configure_logging
from switchboard.settings import Settings, SettingsError

# How long `call` and `simulate` retry an agent that refuses connections (it
# may be starting up) before they give up with one line.
CONNECT_RETRY_S = 5.0
ENV_FILE = ".env"


class UsageError(Exception):
    """A mistake the person running the command can fix; the message says how."""


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
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except UsageError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"switchboard {args.command}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


def _settings(args: argparse.Namespace) -> tuple[Settings, Mapping[str, str]]:
    """Settings from the environment over ``.env``, the command's flags over both."""
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
        return Settings.from_env(env), env
    except SettingsError as exc:
        raise UsageError(str(exc)) from exc


def _run(args: argparse.Namespace) -> int:
    settings, env = _settings(args)
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
        return COMMANDS[args.command](args, settings)
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


def _run_dev(args: argparse.Namespace, settings: Settings) -> int:
    from switchboard import runner

    trio.run(runner.run_dev, settings)
    return 0


def _run_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from switchboard import runner

    trio.run(runner.run_gateway, settings)
    return 0


def _run_actor(args: argparse.Namespace, settings: Settings) -> int:
    from actors import plugins
    from switchboard import runner

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
    return 0


def _run_replay(args: argparse.Namespace, settings: Settings) -> int:
    from switchboard.ops import commands

    code: int = trio.run(
        commands.run_replay, settings, args.call_sid, args.json, args.rerun, args.export, args.url
    )
    return code


def _run_calls(args: argparse.Namespace, settings: Settings) -> int:
    from switchboard.calls import run_calls

    code: int = trio.run(
        lambda: run_calls(
            settings, url=args.url, as_json=args.json, limit=args.limit, since_min=args.since
        )
    )
    return code


def _run_tail(args: argparse.Namespace, settings: Settings) -> int:
    from switchboard.ops import commands

    code: int = trio.run(commands.run_tail, settings, args.call, args.kind, args.url)
    return code


def _run_call(args: argparse.Namespace, settings: Settings) -> int:
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
    return 0


def _run_simulate(args: argparse.Namespace, settings: Settings) -> int:
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


# One run function per subcommand (switchboard.cli_parser defines their arguments).
COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "dev": _run_dev,
    "gateway": _run_gateway,
    "actor": _run_actor,
    "replay": _run_replay,
    "calls": _run_calls,
    "tail": _run_tail,
    "call": _run_call,
    "simulate": _run_simulate,
}


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
