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

    python bench/interrupt_cancel.py [--calls 100] [--concurrency 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import trio

# Run as a script, this folder comes first on sys.path, and bench/bus.py
# would shadow the ``bus`` package: look for packages from the project root.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from bus.envelope import Envelope
from bus.keys import Keys
from bus.redis import open_redis_bus
from bus.resp import RedisClient
from gateway.protocol import Text
from switchboard.logging import configure_logging
from switchboard.procs import open_switchboard
from switchboard.redis_server import open_redis_server
from switchboard.simulator import open_call

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


async def run(calls: int, concurrency: int) -> dict[str, Any]:
    keys = Keys()
    async with open_redis_server() as redis:
        env = dict(ENV, SWITCHBOARD_REDIS_URL=redis.url)
        async with (
            open_switchboard("actor", "conversation", env=env),
            open_switchboard("actor", "llm", env=env),
            open_switchboard("gateway", "--port", "0", env=env) as gateway,
        ):
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
                # Let the last facts land (the gateway publishes them off the hot path).
                with trio.move_on_after(2):
                    while True:
                        facts = [Envelope.decode(e.fields) for e in await bus.range(keys.events)]
                        cancelled = [
                            f for f in facts if f.body.get("fact") == "generation_cancelled"
                        ]
                        if len(cancelled) >= calls:
                            break
                        await trio.sleep(0.05)
    interrupts = {
        f.call: f.body["t_ms"] for f in facts if f.body.get("fact") == "interrupt_received"
    }
    deltas = [
        f.body["t_ms"] - interrupts[f.call]
        for f in facts
        if f.body.get("fact") == "generation_cancelled"
        and f.body.get("reason") == "interrupt"
        and f.call in interrupts
    ]
    if not deltas:
        raise RuntimeError("no interrupt was matched to a cancelled generation")
    return {
        "calls": calls,
        "matched": len(deltas),
        "p50_ms": round(_quantile(deltas, 0.5), 2),
        "p99_ms": round(_quantile(deltas, 0.99), 2),
        "max_ms": round(max(deltas), 2),
        "redis_rtt_p50_ms": round(rtt, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("warning")
    result = trio.run(run, args.calls, args.concurrency)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    sys.stdout.write(
        "interrupt received at the gateway -> provider stream cancelled (Redis, 3 processes)\n"
        f"calls {result['calls']}, matched {result['matched']}: "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms; "
        f"Redis PING p50 {result['redis_rtt_p50_ms']} ms in the same run "
        f"(p50 = {result['p50_ms'] / result['redis_rtt_p50_ms']:.1f}x a round trip)\n"
    )


if __name__ == "__main__":
    main()
