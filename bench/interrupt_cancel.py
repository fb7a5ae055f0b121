"""Barge-in to cancel: how long after the gateway receives ``interrupt`` is the
provider's stream cancelled, in the Redis multi-process set-up.

The gateway stamps ``interrupt_received`` when it reads the caller's
``interrupt`` frame; the LLM worker stamps ``generation_cancelled`` when it
reads the conversation's ``control.cancel`` and cancels the provider stream.
Both are facts on the events stream with wall-clock milliseconds from the same
host, so their difference is the cross-process path: gateway -> partition
stream -> conversation -> control stream -> LLM worker (two bus hops and the
conversation's handling in between). The Redis round trip (PING) measured in
the same run is printed beside it as the yardstick.

    python bench/interrupt_cancel.py [--calls 100] [--concurrency 10]
        [--conversation-workers 1] [--llm-workers 1] [--json]

The control entry's id (Redis' clock when the conversation published the
cancel) splits the path: gateway -> cancel published, and cancel published ->
stream stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

# Run as a script, this folder comes first on sys.path, and bench/bus.py
# would shadow the ``bus`` package: look for packages from the project root.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from bus.base import parse_id
from bus.envelope import Envelope
from bus.keys import Keys
from bus.redis import open_redis_bus
from bus.resp import RedisClient
from relay import Text
from switchboard.logging import configure_logging
from switchboard.testing.procs import open_switchboard
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio import open_call

# A long question gets a long scripted answer, streamed slowly enough that
# the interrupt always lands mid-reply.
QUESTION = " ".join(["Tell me everything about the opening hours of the branch"] * 4)
ENV = {
    "SWITCHBOARD_LLM_PROVIDER": "scripted",
    "SWITCHBOARD_SCRIPTED_FIRST_TOKEN_MS": "0",
    "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "30",
    "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
    "SWITCHBOARD_LOG_LEVEL": "info",
    "TWILIO_AUTH_TOKEN": "",
    "ANTHROPIC_API_KEY": "",
}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _one_call(url: str) -> None:
    async with open_call(url) as call:
        await call.prompt(QUESTION)
        frames = 0
        while frames < 3:
            if isinstance(await call.next_message(), Text):
                frames += 1
        await call.interrupt("Tell me everything", 400)
        # The caller's next words close the cut-off turn, as on a real call.
        await call.prompt("Stop, thanks.")
        await call.reply()


async def _redis_rtt_ms(url: str, n: int = 500) -> float:
    client = RedisClient.from_url(url)
    try:
        samples = []
        for _ in range(n):
            start = trio.current_time()
            await client.execute("PING")
            samples.append((trio.current_time() - start) * 1000)
        return _quantile(samples, 0.5)
    finally:
        await client.aclose()


async def run(
    calls: int, concurrency: int, conversation_workers: int = 1, llm_workers: int = 1
) -> dict[str, Any]:
    keys = Keys()
    async with open_redis_server() as redis, AsyncExitStack() as stack:
        env = dict(ENV, SWITCHBOARD_REDIS_URL=redis.url)
        roles = [("conversation", i) for i in range(conversation_workers)]
        roles += [("llm", i) for i in range(llm_workers)]
        for role, i in roles:
            worker_env = dict(env, SWITCHBOARD_WORKER_ID=f"{role}-{i}")
            await stack.enter_async_context(open_switchboard("actor", role, env=worker_env))
        gateway = await stack.enter_async_context(
            open_switchboard("gateway", "--port", "0", env=env)
        )
        url = f"http://127.0.0.1:{gateway.port}"
        limiter = trio.CapacityLimiter(concurrency)

        async def guarded() -> None:
            async with limiter:
                await _one_call(url)

        async with trio.open_nursery() as nursery:
            for _ in range(calls):
                nursery.start_soon(guarded)
        rtt = await _redis_rtt_ms(redis.url)
        async with open_redis_bus(redis.url) as bus:
            # The last facts land off the hot path: wait (bounded) until every
            # call's cancel is on the events stream.
            facts: list[Envelope] = []
            with trio.move_on_after(2):
                after = "0-0"
                while sum(f.body.get("fact") == "generation_cancelled" for f in facts) < calls:
                    for entry in await bus.read(keys.events, after, count=1000, block_ms=200):
                        after = entry.id
                        facts.append(Envelope.decode(entry.fields))
            # The control entry's id is Redis' clock when the conversation
            # published the cancel: it splits the path in two.
            published: dict[str, int] = {}
            for entry in await bus.range(keys.control):
                env_ = Envelope.decode(entry.fields)
                if env_.body.get("reason") == "interrupt":
                    published.setdefault(env_.call, parse_id(entry.id)[0])
    interrupts = {
        f.call: float(f.body["t_ms"]) for f in facts if f.body.get("fact") == "interrupt_received"
    }
    cancelled = {
        f.call: float(f.body["t_ms"])
        for f in facts
        if f.body.get("fact") == "generation_cancelled" and f.body.get("reason") == "interrupt"
    }
    matched = [c for c in cancelled if c in interrupts and c in published]
    if not matched:
        raise RuntimeError("no interrupt was matched to a cancelled generation")

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(_quantile(values, 0.5), 2),
            "p99_ms": round(_quantile(values, 0.99), 2),
            "max_ms": round(max(values), 2),
        }

    return {
        "calls": calls,
        "concurrency": concurrency,
        "conversation_workers": conversation_workers,
        "llm_workers": llm_workers,
        "matched": len(matched),
        "total": stats([cancelled[c] - interrupts[c] for c in matched]),
        "to_cancel_published": stats([published[c] - interrupts[c] for c in matched]),
        "published_to_cancelled": stats([cancelled[c] - published[c] for c in matched]),
        "redis_rtt_p50_ms": round(rtt, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--conversation-workers", type=int, default=1)
    parser.add_argument("--llm-workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("warning")
    result = trio.run(
        run, args.calls, args.concurrency, args.conversation_workers, args.llm_workers
    )
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    lines = [
        "interrupt received at the gateway -> provider stream cancelled (Redis)",
        f"calls {result['calls']} ({result['concurrency']} at once), "
        f"{result['conversation_workers']} conversation / {result['llm_workers']} LLM workers, "
        f"matched {result['matched']}; Redis PING p50 {result['redis_rtt_p50_ms']} ms",
    ]
    for key, label in (
        ("total", "total"),
        ("to_cancel_published", "gateway -> cancel published"),
        ("published_to_cancelled", "cancel published -> stopped"),
    ):
        row = result[key]
        lines.append(
            f"  {label:30} p50 {row['p50_ms']:>7} ms  p99 {row['p99_ms']:>7} ms  "
            f"max {row['max_ms']:>7} ms"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
