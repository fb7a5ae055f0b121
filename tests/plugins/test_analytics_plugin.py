"""The example plug-in (examples/analytics) beside a live multi-process system on Redis.

Four real processes (gateway, conversation, llm, telemetry) serve one call;
then the analytics plug-in starts as its own process (``switchboard actor
analytics``, found through the ``switchboard.actors`` entry point) and a
second call is made. The plug-in's output stream must describe that call,
and every other stream must have exactly the consumer groups it had before:
the plug-in only adds its own group on the events stream.

The replay CLI is checked against the same Redis: the timeline shows the
interrupt; ``--rerun`` finds no difference with unchanged settings and
exactly the greeting with a changed one; an unknown call exits 1 with a
message. (A tool call cannot be produced yet: no provider emits one.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import redis
import trio
from prometheus_client.parser import text_string_to_metric_families

from actors.plugins import PluginContext, available, load
from bus.envelope import Envelope
from bus.keys import Keys
from switchboard.metrics_http import fetch
from switchboard.testing.procs import HANG_GUARD_S, SwitchboardProcess, open_switchboard
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio import open_call

pytestmark = pytest.mark.system

analytics = pytest.importorskip(
    "switchboard_analytics", reason="install the example: pip install -e examples/analytics"
)

GREETING = "Thanks for calling the plug-in test line."


def _env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_WELCOME_GREETING": GREETING,
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_PARTITIONS": "4",
        "ANTHROPIC_API_KEY": "",
        "TWILIO_AUTH_TOKEN": "",
    }
    env.update(extra)
    return env


def _ready(proc: SwitchboardProcess, field: str) -> Any:
    return next(e[field] for e in proc.events if e.get("event") == "switchboard_ready")


def _groups(url: str) -> dict[str, set[str]]:
    """Every stream and the names of its consumer groups (XINFO GROUPS)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        out: dict[str, set[str]] = {}
        for key in client.scan_iter(_type="STREAM"):
            out[str(key)] = {str(g["name"]) for g in client.xinfo_groups(key)}
        return out
    finally:
        client.close()


def _stream(url: str, name: str) -> list[Envelope]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [Envelope.decode(fields) for _, fields in client.xrange(name)]
    finally:
        client.close()


async def _call(port: int, prompts: list[str], *, interrupt: bool) -> str:
    async with open_call(f"http://127.0.0.1:{port}") as call:
        for n, text in enumerate(prompts):
            await call.prompt(text)
            await call.reply()
            if interrupt and n == 0:
                await call.interrupt("You said", 150.0)
        return call.call_sid


async def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    full = {**os.environ, **env, "SWITCHBOARD_LOG_FORMAT": "json"}
    argv = [sys.executable, "-m", "switchboard.cli", *args]
    return await trio.run_process(
        argv, env=full, capture_stdout=True, capture_stderr=True, check=False
    )


@asynccontextmanager
async def _system(url: str) -> AsyncIterator[tuple[int, SwitchboardProcess]]:
    env = _env(url)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(open_switchboard("actor", "conversation", env=env))
        await stack.enter_async_context(open_switchboard("actor", "llm", env=env))
        telemetry = await stack.enter_async_context(
            open_switchboard("actor", "telemetry", env={**env, "SWITCHBOARD_METRICS_PORT": "0"})
        )
        gateway = await stack.enter_async_context(
            open_switchboard("gateway", "--port", "0", env=env)
        )
        yield int(str(_ready(gateway, "url")).rsplit(":", 1)[1]), telemetry


async def test_plugin_beside_a_live_system_changes_nothing_but_its_own_group() -> None:
    keys = Keys(partitions=4)
    with trio.fail_after(HANG_GUARD_S):
        async with open_redis_server() as server, _system(server.url) as (port, telemetry):
            first = await _call(port, ["Hello there."], interrupt=False)
            await telemetry.wait_for("call_summary", call_sid=first)
            before = await trio.to_thread.run_sync(_groups, server.url)

            plugin_env = {**_env(server.url), "SWITCHBOARD_METRICS_PORT": "0"}
            async with open_switchboard("actor", "analytics", env=plugin_env) as plugin:
                second = await _call(
                    port,
                    ["I need to book a table for Friday.", "The table booking is for four."],
                    interrupt=True,
                )
                await plugin.wait_for("call_analytics", call_sid=second)
                await telemetry.wait_for("call_summary", call_sid=second)
                plugin_port = _ready(plugin, "metrics_port")
                status, metrics = await fetch("127.0.0.1", plugin_port, "/metrics")
            after = await trio.to_thread.run_sync(_groups, server.url)
            out = await trio.to_thread.run_sync(
                _stream, server.url, analytics.analytics_stream(keys.namespace)
            )
            summary = await telemetry.wait_for("call_summary", call_sid=second)
            _, telemetry_metrics = await fetch(
                "127.0.0.1", _ready(telemetry, "metrics_port"), "/metrics"
            )

            # Replay through the real CLI, against the same Redis.
            env = _env(server.url)
            shown = await _cli("replay", second, env=env)
            rerun_same = await _cli("replay", second, "--rerun", env=env)
            rerun_new = await _cli(
                "replay",
                second,
                "--rerun",
                env={**env, "SWITCHBOARD_WELCOME_GREETING": "A different hello."},
            )
            unknown = await _cli("replay", "CA" + "0" * 32, env=env)

    # The plug-in added its group on the events stream and its own output stream, nothing else.
    assert after.pop(analytics.analytics_stream(keys.namespace)) == set()
    assert after[keys.events] == before[keys.events] | {"analytics"}
    after[keys.events] = before[keys.events]
    assert after == before
    assert "telemetry" in before[keys.events]

    mine = [env for env in out if env.call == second]
    assert len(mine) == 1
    body = mine[0].body
    assert body["turns"] == 2 and body["interruptions"] == 1
    assert body["topics"] == ["table", "book", "friday", "booking", "four"]
    assert body["talk_time_s"] >= 0

    assert status == 200 and "switchboard_analytics_calls_total" in metrics
    # Every role's process times its collector pauses (switchboard.gcpause).
    assert 'switchboard_gc_pause_seconds_count{generation="0"}' in metrics
    assert summary["turns"] == 2 and summary["interruptions"] == 1
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(telemetry_metrics)
        for s in family.samples
        if not s.labels
    }
    assert samples["switchboard_turn_first_token_seconds_count"] >= 3
    assert samples["switchboard_interruptions_total"] == 1

    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    assert "call.interrupt" in text and "caller interrupted" in text
    assert rerun_same.returncode == 0 and rerun_same.stdout.decode().strip().endswith(
        "no differences"
    )
    changed = rerun_new.stdout.decode()
    assert rerun_new.returncode == 1, "a rerun with differences exits 1 (CI can use it)"
    assert changed.strip().endswith("1 difference"), changed
    assert "DIFF  said before the first turn" in changed and "A different hello." in changed
    assert unknown.returncode == 1
    assert b"retention" in unknown.stderr and b"Traceback" not in unknown.stderr


def test_the_example_is_found_through_the_entry_point_group() -> None:
    assert "analytics" in available()
    actor = load("analytics", PluginContext(keys=Keys(), worker_id="w", retention_ms=1000))
    assert actor.name == "analytics" and actor.group == "analytics"
    assert list(actor.streams()) == [Keys().events]


def test_topics_are_frequent_content_words() -> None:
    said = ["I want to book a table for Friday.", "A table by the window, please."]
    assert analytics.topics(said) == ["table", "book", "friday", "window"]
