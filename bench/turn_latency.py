"""Turn latency: time from a prompt sent to the first ``text`` frame received.

Three set-ups, measured in the same run, each as its own process(es), with the
same client in this process:

- baseline: a bare trio-websocket server that answers each prompt inline
  (the floor for this stack: one process, no bus, no actors);
- dev: ``switchboard dev`` (gateway and actors in one process, memory bus);
- redis: ``switchboard gateway`` + ``actor conversation`` + ``actor llm`` on a
  real redis-server.

The scripted provider runs with zero delay, so what is measured is the
system's own overhead. Figures are printed as ratios to the baseline because
the machines are shared and noisy: only ratios within one run mean anything.

    python bench/turn_latency.py [--turns 200] [--calls 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import trio_websocket

# Run as a script, this folder comes first on sys.path, and bench/bus.py
# would shadow the ``bus`` package: look for packages from the project root.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from gateway import calltoken
from switchboard.logging import configure_logging
from switchboard.testing.procs import open_switchboard
from switchboard.testing.redis_server import open_redis_server

SETUP = {
    "type": "setup",
    "sessionId": "VX00000000000000000000000000000000",
    "callSid": "",
    "accountSid": "AC00000000000000000000000000000000",
    "parentCallSid": "",
    "from": "+15550100",
    "to": "+15550199",
    "forwardedFrom": "",
    "callerName": "",
    "direction": "inbound",
    "callType": "PSTN",
    "callStatus": "RINGING",
    "customParameters": {},
}


def _reply_words(text: str) -> list[str]:
    words = f"You said: {text}".split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


async def serve_baseline(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """The floor: answer each final prompt inline, word by word, then last:true."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                msg = json.loads(await ws.get_message())
                if msg.get("type") == "prompt" and msg.get("last"):
                    for word in _reply_words(msg["voicePrompt"]):
                        await ws.send_message(json.dumps({"type": "text", "token": word}))
                    await ws.send_message(json.dumps({"type": "text", "token": "", "last": True}))
        except trio_websocket.ConnectionClosed:
            return

    async with trio.open_nursery() as nursery:
        server_obj = await nursery.start(
            trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
        )
        task_status.started(server_obj.port)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def measure(port: int, *, calls: int, turns_per_call: int) -> list[float]:
    """Run ``calls`` sequential calls of ``turns_per_call`` turns; latencies in ms."""
    latencies: list[float] = []
    for c in range(calls):
        call_sid = f"CA{c:032x}"
        secret = ENV["SWITCHBOARD_SESSION_SECRET"].encode()
        token = calltoken.issue(secret, call_sid, now=time.time())
        setup = dict(
            SETUP,
            callSid=call_sid,
            sessionId=f"VX{c:032x}",
            customParameters={calltoken.PARAMETER: token},
        )
        ws_cm = trio_websocket.open_websocket("127.0.0.1", port, "/relay", use_ssl=False)
        async with ws_cm as ws:
            await ws.send_message(json.dumps(setup))
            for t in range(turns_per_call):
                prompt = {
                    "type": "prompt",
                    "voicePrompt": f"turn {t} of call {c}",
                    "lang": "en-US",
                    "last": True,
                }
                start = trio.current_time()
                await ws.send_message(json.dumps(prompt))
                first = None
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame.get("type") != "text":
                        continue
                    if first is None:
                        first = trio.current_time()
                    if frame.get("last"):
                        break
                latencies.append((first - start) * 1000)
    return latencies


@asynccontextmanager
async def baseline() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_baseline)
        yield port
        nursery.cancel_scope.cancel()


ENV = {
    "SWITCHBOARD_LLM_PROVIDER": "scripted",
    "SWITCHBOARD_SCRIPTED_FIRST_TOKEN_MS": "0",
    "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "0",
    "SWITCHBOARD_LOG_LEVEL": "warning",
    "TWILIO_AUTH_TOKEN": "",
    # Known, so the bench can write each setup's session token (gateway.calltoken).
    "SWITCHBOARD_SESSION_SECRET": "bench-session-secret",
    "ANTHROPIC_API_KEY": "",
}


async def run(calls: int, turns: int) -> dict[str, dict[str, float]]:
    per_call = max(1, turns // calls)
    results: dict[str, list[float]] = {}
    async with baseline() as port:
        results["baseline (bare trio-websocket)"] = await measure(
            port, calls=calls, turns_per_call=per_call
        )
    env = dict(ENV, SWITCHBOARD_LOG_LEVEL="info")
    async with open_switchboard("dev", "--port", "0", env=env) as dev:
        results["switchboard dev (memory bus)"] = await measure(
            dev.port, calls=calls, turns_per_call=per_call
        )
    # The conversation's state cache off, then on (its default): the A/B of
    # one state read per entry on the first token's path, in the same run.
    for name, cache in (("redis, no state cache", "0"), ("redis, 3 processes", "4096")):
        async with open_redis_server() as redis:
            renv = dict(
                env, SWITCHBOARD_REDIS_URL=redis.url, SWITCHBOARD_CONVERSATION_STATE_CACHE=cache
            )
            async with (
                open_switchboard("actor", "conversation", env=renv),
                open_switchboard("actor", "llm", env=renv),
                open_switchboard("gateway", "--port", "0", env=renv) as gw,
            ):
                results[name] = await measure(gw.port, calls=calls, turns_per_call=per_call)
    base = results["baseline (bare trio-websocket)"]
    b50, b99 = _quantile(base, 0.5), _quantile(base, 0.99)
    summary: dict[str, dict[str, float]] = {}
    for name, values in results.items():
        p50, p99 = _quantile(values, 0.5), _quantile(values, 0.99)
        summary[name] = {
            "turns": len(values),
            "p50_ms": round(p50, 3),
            "p99_ms": round(p99, 3),
            "p50_ratio": round(p50 / b50, 2),
            "p99_ratio": round(p99 / b99, 2),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("warning")
    summary = trio.run(run, args.calls, args.turns)
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    out = [
        "time from prompt sent to first text frame (scripted provider, zero delay)",
        f"{'set-up':34} {'turns':>5} {'p50 ms':>8} {'p99 ms':>8} {'p50 x':>7} {'p99 x':>7}",
    ]
    for name, row in summary.items():
        out.append(
            f"{name:34} {row['turns']:>5.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{row['p50_ratio']:>7.2f} {row['p99_ratio']:>7.2f}"
        )
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
