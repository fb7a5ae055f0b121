"""A scripted call end to end through the Twilio-side simulator.

(a) ``switchboard dev`` (one process, memory bus) and (b) three real processes
(``gateway``, ``actor conversation``, ``actor llm``) on a real redis-server,
plain, as managed Redis runs (TLS only with client certificates, an ACL
user, database 2), and a Redis Cluster (3 masters, 3 replicas). All must give
the same behaviour: setup, then three prompts; each reply arrives as several
``text`` frames closed by ``last: true``; the LLM request of turn 3 carries
the greeting and turns 1-2 in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.llm.history import resolve_in_order
from bus.envelope import Envelope, Kind
from bus.keys import Keys
from bus.messages import LlmRequest
from bus.redis import open_redis_bus
from switchboard.metrics_http import fetch
from switchboard.testing.procs import HANG_GUARD_S, open_switchboard
from switchboard.testing.redis_cluster import open_redis_cluster
from switchboard.testing.redis_server import AclUser, open_redis_server
from switchboard.testing.tls import make_certificates
from switchboard.twilio import open_call

pytestmark = pytest.mark.system

TOKEN = "system-test-auth-token"
GREETING = "Hi, you are through to the system test agent."
PROMPTS = ["My name is Ada.", "I would like to book a table.", "What did I tell you so far?"]


def _env(**extra: str) -> dict[str, str]:
    env = {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_WELCOME_GREETING": GREETING,
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "2",
        "SWITCHBOARD_PARTITIONS": "8",
        "SWITCHBOARD_LOG_LEVEL": "info",
        "ANTHROPIC_API_KEY": "",
    }
    env.update(extra)
    return env


async def _converse(base_url: str) -> tuple[str, list[Any]]:
    """Place one call, say the three prompts, return the call sid and replies."""
    replies = []
    async with open_call(base_url, auth_token=TOKEN) as call:
        for text in PROMPTS:
            await call.prompt(text)
            replies.append(await call.reply())
        call_sid = call.call_sid
    return call_sid, replies


def _check_replies(replies: list[Any]) -> None:
    assert len(replies) == len(PROMPTS)
    for reply in replies:
        assert len(reply.frames) >= 2, "a reply must stream as several text frames"
        assert reply.frames[-1].last is True
        assert all(frame.last is False for frame in reply.frames[:-1])
        assert reply.text.strip()


def _check_turn3_request(requests: list[Envelope], replies: list[Any]) -> None:
    turn3 = [i for i, env in enumerate(requests) if env.turn == 3]
    assert turn3, f"no llm.request for turn 3 among turns {[e.turn for e in requests]}"
    # Each request carries what is new since the one before: rebuilt in order.
    asked = resolve_in_order((e.call, LlmRequest.from_body(e.body)) for e in requests)
    messages = asked[turn3[0]]
    assert messages == [
        {"role": "assistant", "content": GREETING},
        {"role": "user", "content": PROMPTS[0]},
        {"role": "assistant", "content": replies[0].text},
        {"role": "user", "content": PROMPTS[1]},
        {"role": "assistant", "content": replies[1].text},
        {"role": "user", "content": PROMPTS[2]},
    ]


async def test_scripted_call_against_switchboard_dev() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with open_switchboard("dev", "--port", "0", env=_env()) as dev:
            call_sid, replies = await _converse(f"http://127.0.0.1:{dev.port}")
            _, metrics = await fetch("127.0.0.1", dev.port, "/metrics")
    _check_replies(replies)
    # Start-up objects were settled out of the collector's way before the
    # first call, and the process times its collector pauses.
    assert any(e.get("event") == "gc_settled" and e["frozen"] > 0 for e in dev.events)
    assert 'switchboard_gc_pause_seconds_count{generation="0"}' in metrics
    assert dev.returncode == 0, "switchboard dev must exit 0 on SIGTERM"
    # Every log line about the call carries its context.
    call_lines = [e for e in dev.events if e.get("call_sid") == call_sid]
    assert call_lines
    assert {e.get("actor") for e in call_lines} >= {"gateway", "conversation", "llm"}


@asynccontextmanager
async def _three_processes(redis_url: str, shards: int = 1) -> AsyncIterator[int]:
    env = _env(SWITCHBOARD_REDIS_URL=redis_url, SWITCHBOARD_STREAM_SHARDS=str(shards))
    async with (
        open_switchboard("actor", "conversation", env=env) as _conversation,
        open_switchboard("actor", "llm", env=env) as _llm,
        open_switchboard("gateway", "--port", "0", env=env) as gateway,
    ):
        yield gateway.port


@asynccontextmanager
async def _redis(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh Redis of ``kind``; yields the URL every process is given."""
    if kind == "single":
        async with open_redis_server() as server:
            yield server.url
    elif kind == "cluster":
        # 3 masters + 3 replicas; every role finds the rest from one node.
        async with open_redis_cluster() as cluster:
            yield cluster.url
    else:
        # As managed Redis runs: TLS only with client certificates, an ACL
        # user (default user off), and not database 0.
        certs = await make_certificates(tmp_path)
        user = AclUser("switchboard", "s3cret", "~sb:* &* +@all -@dangerous")
        async with open_redis_server(tls=certs, user=user) as server:
            yield server.url_with(db=2)


@pytest.mark.parametrize("redis_kind", ["single", "tls-acl", "cluster"])
async def test_scripted_call_across_three_processes_on_redis(
    redis_kind: str, tmp_path: Path
) -> None:
    # On the cluster, requests and facts are spread over 4 streams each.
    shards = 4 if redis_kind == "cluster" else 1
    with trio.fail_after(HANG_GUARD_S):
        async with _redis(redis_kind, tmp_path) as redis_url:
            async with _three_processes(redis_url, shards) as port:
                call_sid, replies = await _converse(f"http://127.0.0.1:{port}")
                _, gateway_metrics = await fetch("127.0.0.1", port, "/metrics")
            keys = Keys(partitions=8, shards=shards)
            async with open_redis_bus(redis_url) as bus:
                entries = await bus.range(keys.llm_for(call_sid))
                requests = [Envelope.decode(e.fields) for e in entries]
                partition = await bus.range(keys.calls_for(call_sid))
                inbound = [Envelope.decode(e.fields) for e in partition]
                facts = {s: await bus.range(s) for s in keys.event_streams()}
    # A call's facts all go to its own shard.
    assert {
        s for s, entries in facts.items() for e in entries if e.fields.get("c") == call_sid
    } == {keys.events_for(call_sid)}
    _check_replies(replies)
    assert "switchboard_gc_pause_seconds_bucket" in gateway_metrics
    requests = [r for r in requests if r.call == call_sid and r.kind == Kind.LLM_REQUEST]
    assert [r.turn for r in requests] == [1, 2, 3]
    _check_turn3_request(requests, replies)
    # The partition stream holds the whole call in order: setup, then each
    # prompt followed by the LLM's result for it.
    kinds = [e.kind for e in inbound]
    assert kinds[0] == Kind.CALL_SETUP
    assert kinds.count(Kind.CALL_PROMPT) == 3
    assert kinds.count(Kind.LLM_RESULT) == 3
