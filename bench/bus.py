"""Bus benchmark: ``RedisBus`` against ``redis-benchmark`` on the same server.

One throwaway redis-server is started for the run; every figure below is
measured against it, in the same run, so only the ratios mean anything on a
shared, noisy machine:

- **hop latency**: a producer ``RedisBus`` appending (``XADD``) -> one consumer
  ``RedisBus`` blocked in ``read_group(..., block_ms=...)`` (``XREADGROUP
  BLOCK`` on its own connection), both in this process. Latency is the
  consumer's receive time minus the producer's send time, on this process's
  monotonic clock. The producer offers a fixed rate (1k and 10k msgs/s) from
  one task per 2,500 msgs/s sharing one schedule (one task alone offers at
  most one message per round trip); the rate achieved is printed too. The consumer acks each
  batch, as an actor does.
- **pipelined append**: ``RedisBus.append_many`` in batches of 100, back to
  back on one connection.
- **fan-in**: ``--fanin-tasks`` tasks (200) on one ``RedisBus``, each
  appending one token-sized entry every 20 ms, as an LLM worker streaming
  200 replies does: process CPU per append and the append's own latency.
  This is the load's shape; the concurrent appends share pipelines
  (``bus.resp``, automatic pipelining).
- the C client's reference figures, same server, same entry shape
  (``XADD stream MINID ~ <min> * k .. c .. d ..``):
  ``redis-benchmark -c 1 -P 100 XADD ...`` (pipelined throughput) and
  ``redis-benchmark -c 1 XADD ...`` (one round trip at a time: its p50 is the
  round trip a hop is compared with).

Targets: pipelined append >= 50% of ``redis-benchmark -P 100``; hop p50 <=
2.5x the C client's round trip.

    python bench/bus.py [--rounds 3] [--seconds 4] [--appends 200000] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as ``python bench/bus.py``, this file's folder comes first on sys.path
# and the script itself would shadow the ``bus`` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import hiredis  # noqa: E402
import trio  # noqa: E402

from bus.redis import RedisBus  # noqa: E402
from switchboard.logging import configure_logging  # noqa: E402
from switchboard.testing.redis_server import RedisServerHandle, open_redis_server  # noqa: E402

GROUP = "bench"
BATCH = 100
# The shape of a real entry (bus/envelope.py): kind, call sid, JSON rest.
CALL = "CA" + "0" * 32
BODY = json.dumps(
    {
        "body": {"text": " and that is all", "index": 3, "last": False, "reply_to": 7},
        "session": "VX" + "0" * 32,
        "gateway": "gw-bench-1",
        "seq": 0,
        "turn": 2,
        "ts": 1700000000000,
        "epoch": 0,
    },
    separators=(",", ":"),
)
FIELDS = {"k": "llm.tokens", "c": CALL, "d": BODY}
_NUMBERS = re.compile(r'"([0-9]+(?:\.[0-9]+)?)"')


@dataclass(frozen=True, slots=True)
class HopResult:
    offered: float
    achieved: float
    count: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True, slots=True)
class CResult:
    rps: float
    p50_ms: float
    p99_ms: float


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def measure_hop(
    url: str, rate: float, seconds: float, stream: str, *, producer_tasks: int | None = None
) -> HopResult:
    """Offer ``rate`` msgs/s for ``seconds`` and time each producer->consumer hop.

    The first 10% of the messages warm the connections and are not counted.
    ``producer_tasks`` defaults to one task per 2,500 msgs/s offered: one
    task in step with its round trips keeps up with that much, and several
    at 1k/s measured slower than one.
    """
    if producer_tasks is None:
        producer_tasks = max(1, math.ceil(rate / 2500))
    producer = RedisBus.from_url(url)
    consumer = RedisBus.from_url(url)
    total = max(1, int(rate * seconds))
    sent_at: list[float] = [0.0] * total
    latencies: list[float] = [0.0] * total
    received = 0
    all_received = trio.Event()
    try:
        await consumer.ensure_group(stream, GROUP, "$")

        async def consume() -> None:
            nonlocal received
            while received < total:
                entries = await consumer.read_group(stream, GROUP, "c1", count=BATCH, block_ms=1000)
                now = time.perf_counter()
                for entry in entries:
                    latencies[int(entry.fields["n"])] = now - sent_at[int(entry.fields["n"])]
                received += len(entries)
                if entries:
                    await consumer.ack(stream, GROUP, [e.id for e in entries])
            all_received.set()

        start = trio.current_time() + 0.01
        finished: list[float] = []

        async def produce(first: int, step: int) -> None:
            # Paced by a schedule, not by sleeps after each send: when a send
            # runs late the next ones go at once, so the offered rate holds
            # as long as the producers keep up (the achieved rate says).
            # ``step`` tasks share the schedule, each on its own pooled
            # connection, as concurrent calls on a gateway do: one task
            # alone cannot offer more than one message per round trip.
            for n in range(first, total, step):
                due = start + n / rate
                if trio.current_time() < due:
                    await trio.sleep_until(due)
                fields = {**FIELDS, "n": str(n)}
                sent_at[n] = time.perf_counter()
                await producer.append(stream, fields)
            finished.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            async with trio.open_nursery() as producers:
                for first in range(producer_tasks):
                    producers.start_soon(produce, first, producer_tasks)
            end = max(finished)
            with trio.fail_after(30):
                await all_received.wait()
    finally:
        await producer.aclose()
        await consumer.aclose()
        cleanup = RedisBus.from_url(url)
        await cleanup.client.execute("DEL", stream)
        await cleanup.aclose()
    warm = total // 10
    measured = sorted(latencies[warm:])
    # ``total / rate`` is the schedule's length; sends after it mean we fell behind.
    achieved = total / max(end - start, total / rate) if total > 1 else rate
    return HopResult(
        offered=rate,
        achieved=achieved,
        count=len(measured),
        p50_ms=_percentile(measured, 0.50) * 1000,
        p99_ms=_percentile(measured, 0.99) * 1000,
    )


async def measure_floor_hop(port: int, rate: float, seconds: float, stream: str) -> float:
    """The same hop with no bus code: bare Trio sockets and ``hiredis``.

    One XADD per round trip on one socket, ``XREADGROUP BLOCK`` on another,
    both parsed by ``hiredis.Reader``: what Trio and Python cost by
    themselves, so the report can say how much of a hop is ``RedisBus``.
    Returns the p50 in ms (first 10% not counted).
    """
    producer = await trio.open_tcp_stream("127.0.0.1", port)
    consumer = await trio.open_tcp_stream("127.0.0.1", port)

    async def command(stream_: trio.SocketStream, reader: hiredis.Reader, *args: str) -> Any:
        await stream_.send_all(hiredis.pack_command(args))
        while (reply := reader.gets()) is False:
            reader.feed(await stream_.receive_some(65536))
        return reply

    total = max(1, int(rate * seconds))
    sent_at = [0.0] * total
    latencies: list[float] = []
    preader, creader = hiredis.Reader(encoding="utf-8"), hiredis.Reader(encoding="utf-8")
    async with producer, consumer:
        await command(producer, preader, "XGROUP", "CREATE", stream, GROUP, "$", "MKSTREAM")

        async def consume() -> None:
            while len(latencies) < total:
                reply = await command(
                    consumer, creader, "XREADGROUP", "GROUP", GROUP, "c1", "COUNT",
                    str(BATCH), "BLOCK", "1000", "STREAMS", stream, ">",
                )  # fmt: skip
                now = time.perf_counter()
                for _id, raw in reply[0][1] if reply else ():
                    latencies.append(now - sent_at[int(raw[raw.index("n") + 1])])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            start = trio.current_time() + 0.01
            xadd = _xadd_args(stream)
            for n in range(total):
                await trio.sleep_until(start + n / rate)
                sent_at[n] = time.perf_counter()
                await command(producer, preader, *xadd, "n", str(n))
        await command(producer, preader, "DEL", stream)
    measured = sorted(latencies[total // 10 :])
    return _percentile(measured, 0.50) * 1000


async def measure_append_many(url: str, count: int, stream: str) -> float:
    """Entries per second through ``append_many`` batches of 100, one connection."""
    bus = RedisBus.from_url(url)
    batch = [(stream, FIELDS)] * BATCH
    try:
        for _ in range(20):  # warm-up: connect, let the allocator settle
            await bus.append_many(batch)
        await bus.client.execute("DEL", stream)
        batches = max(1, count // BATCH)
        start = time.perf_counter()
        for _ in range(batches):
            await bus.append_many(batch)
        elapsed = time.perf_counter() - start
        await bus.client.execute("DEL", stream)
    finally:
        await bus.aclose()
    return batches * BATCH / elapsed


@dataclass(frozen=True, slots=True)
class FanInResult:
    appends: int
    rate: float
    cpu_us_per_append: float
    p50_ms: float
    p99_ms: float


async def measure_fanin(
    url: str, tasks: int, seconds: float, stream: str, gap_s: float = 0.02
) -> FanInResult:
    """``tasks`` producers each appending one entry every ``gap_s``; CPU and latency."""
    bus = RedisBus.from_url(url)
    latencies: list[float] = []

    async def producer(i: int) -> None:
        await trio.sleep(gap_s * i / tasks)  # spread the starts over one gap
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            sent = time.perf_counter()
            await bus.append(stream, FIELDS)
            latencies.append(time.perf_counter() - sent)
            await trio.sleep(gap_s)

    try:
        await bus.append(stream, FIELDS)  # connect before the clock starts
        cpu, wall = time.process_time(), time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(tasks):
                nursery.start_soon(producer, i)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await bus.client.execute("DEL", stream)
    finally:
        await bus.aclose()
    latencies.sort()
    return FanInResult(
        appends=len(latencies),
        rate=len(latencies) / wall,
        cpu_us_per_append=cpu / len(latencies) * 1e6,
        p50_ms=_percentile(latencies, 0.5) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
    )


def _xadd_args(stream: str) -> list[str]:
    # Same arguments RedisBus sends (MINID ~ <min>, auto id, three fields);
    # a MINID of 0 trims nothing, like a 24 h retention in a short run.
    args = ["XADD", stream, "MINID", "~", "0", "*"]
    for key, value in FIELDS.items():
        args += [key, value]
    return args


async def redis_benchmark(port: int, count: int, pipeline: int, stream: str) -> CResult:
    """Run the C client with one connection; parse its CSV line."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark not found (Debian package redis-tools)")
    argv = [binary, "-p", str(port), "-c", "1", "-n", str(count), "--csv"]
    if pipeline > 1:
        argv += ["-P", str(pipeline)]
    result = await trio.run_process(argv + _xadd_args(stream), capture_stdout=True)
    # The first CSV column echoes the command unescaped (our JSON has quotes),
    # so read the seven numeric columns from the end of the last line:
    # rps, avg, min, p50, p95, p99, max.
    line = result.stdout.decode().strip().splitlines()[-1]
    rps, _avg, _min, p50, _p95, p99, _max = (float(v) for v in _NUMBERS.findall(line)[-7:])
    return CResult(rps=rps, p50_ms=p50, p99_ms=p99)


async def run(
    seconds: float, appends: int, rates: list[float], rounds: int, fanin_tasks: int
) -> list[Round]:
    """``rounds`` rounds, each measuring everything once, interleaved.

    Other work on a shared machine comes and goes; interleaving puts each
    ratio's two sides close together in time, and the median over rounds
    drops the round a neighbour spoiled.
    """
    out: list[Round] = []
    async with open_redis_server() as server:
        for n in range(rounds):
            out.append(await _round(server, seconds, appends, rates, n, fanin_tasks))
    return out


@dataclass(frozen=True, slots=True)
class Round:
    roundtrip: CResult
    pipelined: CResult
    append_many_rps: float
    hops: list[HopResult]
    floor_hop_p50_ms: float
    fanin: FanInResult | None


async def _round(
    server: RedisServerHandle,
    seconds: float,
    appends: int,
    rates: list[float],
    n: int,
    fanin_tasks: int,
) -> Round:
    url = server.url
    rt = await redis_benchmark(server.port, 20_000, 1, f"bench:c:rt:{n}")
    piped = await redis_benchmark(server.port, appends, BATCH, f"bench:c:piped:{n}")
    await server_del(url, f"bench:c:rt:{n}", f"bench:c:piped:{n}")
    ours = await measure_append_many(url, appends, f"bench:piped:{n}")
    hops = [await measure_hop(url, rate, seconds, f"bench:hop:{int(rate)}:{n}") for rate in rates]
    floor = await measure_floor_hop(server.port, min(rates), seconds, f"bench:floor:{n}")
    fanin = (
        await measure_fanin(url, fanin_tasks, seconds, f"bench:fanin:{n}") if fanin_tasks else None
    )
    return Round(rt, piped, ours, hops, floor, fanin)


async def server_del(url: str, *keys: str) -> None:
    bus = RedisBus.from_url(url)
    try:
        await bus.client.execute("DEL", *keys)
    finally:
        await bus.aclose()


def _median(values: list[float]) -> float:
    return statistics.median(values)


def summarize(rounds: list[Round]) -> dict[str, Any]:
    """Medians over rounds; ratios are taken within each round first."""
    summary: dict[str, Any] = {
        "rounds": len(rounds),
        "redis_benchmark_roundtrip_p50_ms": _median([r.roundtrip.p50_ms for r in rounds]),
        "redis_benchmark_pipelined_rps": _median([r.pipelined.rps for r in rounds]),
        "append_many_rps": _median([r.append_many_rps for r in rounds]),
        "append_many_ratios": [r.append_many_rps / r.pipelined.rps for r in rounds],
        "hops": [],
        "floor_hop_p50_ms": _median([r.floor_hop_p50_ms for r in rounds]),
        "floor_hop_ratio": _median([r.floor_hop_p50_ms / r.roundtrip.p50_ms for r in rounds]),
        "floor_rate": min(r.offered for r in rounds[0].hops),
    }
    summary["append_many_ratio"] = _median(summary["append_many_ratios"])
    fanins = [r.fanin for r in rounds if r.fanin is not None]
    if fanins:
        summary["fanin"] = {
            "tasks_gap_ms": 20,
            "rate": _median([f.rate for f in fanins]),
            "cpu_us_per_append": _median([f.cpu_us_per_append for f in fanins]),
            "cpu_us_per_append_rounds": [f.cpu_us_per_append for f in fanins],
            "p50_ms": _median([f.p50_ms for f in fanins]),
            "p99_ms": _median([f.p99_ms for f in fanins]),
        }
    for i, first in enumerate(rounds[0].hops):
        hops = [r.hops[i] for r in rounds]
        ratios = [h.p50_ms / r.roundtrip.p50_ms for h, r in zip(hops, rounds, strict=True)]
        summary["hops"].append(
            {
                "offered": first.offered,
                "achieved": _median([h.achieved for h in hops]),
                "count": sum(h.count for h in hops),
                "p50_ms": _median([h.p50_ms for h in hops]),
                "p99_ms": _median([h.p99_ms for h in hops]),
                "p50_ratios": ratios,
                "p50_ratio": _median(ratios),
            }
        )
    return summary


def _span(values: list[float], fmt: str) -> str:
    return f"{format(min(values), fmt)}..{format(max(values), fmt)}"


def _report(s: dict[str, Any]) -> str:
    ratio = s["append_many_ratio"]
    lines = [
        f"{s['rounds']} rounds; medians over rounds (ratios taken within each round); "
        f"{s['machine']['cpus']} CPUs, load {s['machine']['load_1m_before']:.1f} before, "
        f"{s['machine']['load_1m_after']:.1f} after",
        "redis-benchmark -c 1 XADD (round trip): "
        f"p50 {s['redis_benchmark_roundtrip_p50_ms']:.3f} ms",
        f"redis-benchmark -c 1 -P {BATCH} XADD:      "
        f"{s['redis_benchmark_pipelined_rps']:,.0f} entries/s",
        f"RedisBus.append_many x{BATCH}:          {s['append_many_rps']:,.0f} entries/s "
        f"= {ratio:.0%} of redis-benchmark -P {BATCH} "
        f"(rounds {_span(s['append_many_ratios'], '.0%')}; target >= 50%: "
        + ("met)" if ratio >= 0.5 else "MISSED)"),
    ]
    for hop in s["hops"]:
        lines.append(
            f"hop at {hop['offered']:,.0f}/s offered ({hop['achieved']:,.0f}/s achieved, "
            f"n={hop['count']}): p50 {hop['p50_ms']:.3f} ms = {hop['p50_ratio']:.1f}x "
            f"round trip (rounds {_span(hop['p50_ratios'], '.1f')}; target <= 2.5x: "
            f"{'met' if hop['p50_ratio'] <= 2.5 else 'MISSED'}); p99 {hop['p99_ms']:.3f} ms"
        )
    lines.append(
        f"floor: the same hop on bare Trio sockets + hiredis, no bus code, at "
        f"{s['floor_rate']:,.0f}/s: p50 {s['floor_hop_p50_ms']:.3f} ms = "
        f"{s['floor_hop_ratio']:.1f}x round trip"
    )
    fanin = s.get("fanin")
    if fanin is not None:
        lines.append(
            f"fan-in, {s['fanin_tasks']} tasks x 1 append / 20 ms ({fanin['rate']:,.0f}/s "
            f"achieved): {fanin['cpu_us_per_append']:.1f} us CPU per append (rounds "
            f"{_span(fanin['cpu_us_per_append_rounds'], '.1f')}); append p50 "
            f"{fanin['p50_ms']:.3f} ms, p99 {fanin['p99_ms']:.3f} ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each hop run")
    parser.add_argument("--appends", type=int, default=200_000, help="entries per append run")
    parser.add_argument(
        "--rates", default="1000,10000", help="offered hop rates, msgs/s, comma separated"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--fanin-tasks", type=int, default=200, help="fan-in producer tasks (0: skip)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    configure_logging("warning", "console")
    rates = [float(r) for r in args.rates.split(",") if r]
    load_before = os.getloadavg()[0]
    summary = summarize(
        trio.run(run, args.seconds, args.appends, rates, args.rounds, args.fanin_tasks)
    )
    summary["fanin_tasks"] = args.fanin_tasks
    # Neighbours' load is the main source of noise: record it with the figures.
    summary["machine"] = {
        "cpus": os.cpu_count(),
        "load_1m_before": load_before,
        "load_1m_after": os.getloadavg()[0],
    }
    print(json.dumps(summary, indent=2) if args.json else _report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
