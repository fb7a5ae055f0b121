"""What Redis spends per turn: one node and a 3-master cluster under the same load.

Starts the three roles (gateway, conversation, LLM worker with the scripted
provider) against a fresh Redis, drives simulated calls through them
(``switchboard.simulate``, the ``bench/scenarios/load.json`` script), and
reads every master's ``INFO`` before and after: CPU (``used_cpu_sys`` +
``used_cpu_user``), commands (``commandstats``) and network bytes. Printed per
1,000 turns, per turn and per call, and for the cluster per master. The same
load runs on one node and on a cluster of 3 masters + 3 replicas (replicas
are not counted: they only replay what the masters did).

    python bench/redis_capacity.py [--calls 100] [--concurrency 50] [--shards 8]
                                   [--targets single,cluster] [--json FILE]

Figures go to docs/BENCHMARKS.md and docs/CAPACITY.md by hand: they are
inputs to a model, with the machine's load noted next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

# Run as a script, this folder comes first on sys.path, and its bench/bus.py
# would shadow the ``bus`` package: look for packages from the project root.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from bus.resp import RedisClient
from switchboard.logging import configure_logging
from switchboard.simulate import run_simulation
from switchboard.testing.procs import open_switchboard
from switchboard.testing.redis_cluster import open_redis_cluster
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio.results import SimulationConfig
from switchboard.twilio.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def _info(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


async def _snapshot(url: str) -> dict[str, Any]:
    """CPU seconds, per-command calls and network bytes of one node so far."""
    client = RedisClient.from_url(url)
    try:
        cpu = _info(await client.execute("INFO", "cpu"))
        memory = _info(await client.execute("INFO", "memory"))
        stats = _info(await client.execute("INFO", "stats"))
        commands = _info(await client.execute("INFO", "commandstats"))
    finally:
        await client.aclose()
    calls = {}
    for key, value in commands.items():
        fields = dict(part.split("=", 1) for part in value.split(","))
        calls[key.removeprefix("cmdstat_")] = int(fields["calls"])
    return {
        "cpu_s": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        "in_bytes": int(stats["total_net_input_bytes"]),
        "out_bytes": int(stats["total_net_output_bytes"]),
        "memory": int(memory["used_memory"]),
        "commands": calls,
    }


def _group(key: str) -> str:
    """Which kind of key: the part after the namespace, without ids."""
    rest = key.split(":", 1)[1] if ":" in key else key
    tag = rest[rest.find("{") + 1 : rest.find("}")] if "{" in rest else rest
    if tag.startswith("p") and tag[1:].isdigit():
        return "calls {pN}: " + (rest.split("}:", 1)[1].split(":")[0] if "}:" in rest else "")
    return "{" + tag.split(":")[0] + "}" + (rest.split("}", 1)[1] if "}" in rest else "")


async def _keys_memory(url: str) -> dict[str, dict[str, int]]:
    """Bytes (``MEMORY USAGE``) and stream entries per kind of key on one node."""
    client = RedisClient.from_url(url)
    out: dict[str, dict[str, int]] = {}
    try:
        cursor = "0"
        while True:
            cursor, keys = await client.execute("SCAN", cursor, "COUNT", 1000)
            for key in keys:
                group = out.setdefault(_group(key), {"keys": 0, "bytes": 0, "entries": 0})
                group["keys"] += 1
                group["bytes"] += int(await client.execute("MEMORY", "USAGE", key, "SAMPLES", 0))
                if await client.execute("TYPE", key) == "stream":
                    group["entries"] += int(await client.execute("XLEN", key))
            if cursor == "0":
                return out
    finally:
        await client.aclose()


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    names = set(before["commands"]) | set(after["commands"])
    commands = {
        n: after["commands"].get(n, 0) - before["commands"].get(n, 0) for n in sorted(names)
    }
    return {
        "cpu_s": after["cpu_s"] - before["cpu_s"],
        "in_bytes": after["in_bytes"] - before["in_bytes"],
        "out_bytes": after["out_bytes"] - before["out_bytes"],
        "commands": {n: c for n, c in commands.items() if c},
    }


@asynccontextmanager
async def _redis(target: str) -> AsyncIterator[tuple[str, list[str]]]:
    """The URL for the roles and the URLs of the masters to measure."""
    if target == "single":
        async with open_redis_server() as server:
            yield server.url, [server.url]
        return
    async with open_redis_cluster() as cluster:
        client = RedisClient.from_url(cluster.url)
        try:
            slots = await client.execute("CLUSTER", "SLOTS")
        finally:
            await client.aclose()
        ports = sorted({int(master[1]) for _, _, master, *_ in slots})
        yield cluster.url, [cluster.node(p).url for p in ports]


async def measure(target: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_SCRIPTED_FIRST_TOKEN_MS": str(args.ttft_ms),
        "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": str(args.gap_ms),
        "SWITCHBOARD_LOG_LEVEL": "info",
        "SWITCHBOARD_STREAM_SHARDS": str(args.shards if target == "cluster" else 1),
        "TWILIO_AUTH_TOKEN": "",
        "ANTHROPIC_API_KEY": "",
        "SWITCHBOARD_WELCOME_GREETING": "",
    }
    scenario = load_scenario(args.scenario)
    async with _redis(target) as (url, masters):
        env["SWITCHBOARD_REDIS_URL"] = url
        async with (
            open_switchboard("actor", "conversation", env=env),
            open_switchboard("actor", "llm", env=env),
            open_switchboard("gateway", "--port", "0", env=env) as gateway,
        ):
            port = next(
                int(str(e["url"]).rsplit(":", 1)[1])
                for e in gateway.events
                if e.get("event") == "switchboard_ready" and "url" in e
            )
            before = [await _snapshot(m) for m in masters]
            config = SimulationConfig(
                url=f"http://127.0.0.1:{port}",
                calls=args.calls,
                concurrency=args.concurrency,
                seed=1,
                ramp_s=2.0,
                provider_ttft_ms=args.ttft_ms,
                label=target,
            )
            result = await run_simulation(config, scenario)
            # Let the last acks and facts land before reading the counters.
            await trio.sleep(1.0)
            after = [await _snapshot(m) for m in masters]
            by_key: dict[str, dict[str, int]] = {}
            for m in masters:
                for name, got in (await _keys_memory(m)).items():
                    into = by_key.setdefault(name, {"keys": 0, "bytes": 0, "entries": 0})
                    for field, value in got.items():
                        into[field] += value
    per_master = [_delta(b, a) for b, a in zip(before, after, strict=True)]
    turns = sum(1 for t in result.turns() if t.complete)
    calls = sum(1 for c in result.calls if c.error is None)
    commands: dict[str, int] = {}
    for m in per_master:
        for name, count in m["commands"].items():
            commands[name] = commands.get(name, 0) + count
    cpu_s = sum(m["cpu_s"] for m in per_master)
    total_in = sum(m["in_bytes"] for m in per_master)
    total_out = sum(m["out_bytes"] for m in per_master)
    return {
        "target": target,
        "masters": len(masters),
        "shards": int(env["SWITCHBOARD_STREAM_SHARDS"]),
        "calls": calls,
        "turns": turns,
        "duration_s": round(result.duration_s, 1),
        "counts": result.counts(),
        "redis_cpu_s": round(cpu_s, 3),
        "redis_cpu_s_per_1000_turns": round(1000 * cpu_s / max(turns, 1), 3),
        "cpu_s_per_1000_turns_per_master": [
            round(1000 * m["cpu_s"] / max(turns, 1), 3) for m in per_master
        ],
        "commands_per_turn": round(sum(commands.values()) / max(turns, 1), 1),
        "commands_per_call": round(sum(commands.values()) / max(calls, 1), 1),
        "bytes_in_per_turn": round(total_in / max(turns, 1)),
        "bytes_out_per_turn": round(total_out / max(turns, 1)),
        "memory_bytes_per_turn": round(
            sum(a["memory"] - b["memory"] for b, a in zip(before, after, strict=True))
            / max(turns, 1)
        ),
        "per_turn_by_key": {
            name: {
                "bytes": round(v["bytes"] / max(turns, 1)),
                "entries": round(v["entries"] / max(turns, 1), 2),
            }
            for name, v in sorted(by_key.items(), key=lambda kv: -kv[1]["bytes"])
        },
        "commands_per_turn_by_name": {
            n: round(c / max(turns, 1), 2)
            for n, c in sorted(commands.items(), key=lambda kv: -kv[1])
        },
        "loadavg": os.getloadavg(),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for target in args.targets.split(","):
        doc = await measure(target, args)
        sys.stderr.write(
            f"{target}: {doc['turns']} turns, {doc['calls']} calls, Redis CPU "
            f"{doc['redis_cpu_s_per_1000_turns']} s per 1,000 turns "
            f"(per master {doc['cpu_s_per_1000_turns_per_master']}), "
            f"{doc['commands_per_turn']} commands and "
            f"{doc['bytes_in_per_turn']}/{doc['bytes_out_per_turn']} bytes in/out per turn\n"
        )
        out.append(doc)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--shards", type=int, default=8, help="stream shards on the cluster")
    parser.add_argument("--targets", default="single,cluster")
    parser.add_argument("--scenario", default=str(ROOT / "bench" / "scenarios" / "load.json"))
    parser.add_argument("--ttft-ms", type=float, default=300.0)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--json", dest="json_out", help="write the figures here ('-': stdout)")
    args = parser.parse_args()
    configure_logging("warning", "console")
    docs = trio.run(run, args)
    text = json.dumps(docs, indent=2)
    if args.json_out == "-":
        print(text)
    elif args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
