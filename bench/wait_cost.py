"""What confirming caller events by a replica costs: appends with and without ``WAIT``.

Starts a Redis Cluster of 3 masters + 3 replicas (``open_redis_cluster``,
the test cluster), waits until the slot map lists the replicas, then appends
caller-event-sized entries to one partition stream through ``RedisBus``:
``append`` (plain ``XADD``) and ``append_replicated`` (``XADD`` + ``WAIT 1``
on the same connection, :mod:`bus.replicated`). Two shapes, each run with
and without ``WAIT``, interleaved in rounds so the machine's load hits both
alike:

- *sequential*: one caller, one append at a time (the latency of one event);
- *concurrent*: ``--concurrency`` callers at once (events of many calls).

Printed: appends per second for each and the ratio (with / without), and the
median latency of one sequential append. Loopback only: across zones the
added cost is the replication round trip.

    python bench/wait_cost.py [--appends 2000] [--concurrency 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import trio

# Run as a script, this folder comes first on sys.path, and its bench/bus.py
# would shadow the ``bus`` package: look for packages from the project root.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from bus.cluster import ClusterClient, key_slot, open_redis_client
from bus.redis import RedisBus
from switchboard.logging import configure_logging
from switchboard.testing.redis_cluster import open_redis_cluster

STREAM = "sb:{p7}:calls"
# About the size of a caller prompt's envelope.
FIELDS = {"kind": "caller.prompt", "call": "CA" + "0" * 32, "seq": "12", "body": "x" * 240}


async def _replicas_listed(client: ClusterClient) -> None:
    with trio.fail_after(60):
        while True:  # the cluster bus has no event to wait on: poll the map
            if (await client.master_of(key_slot(STREAM), recheck_s=0.05))[1] > 0:
                return
            await trio.sleep(0.1)


async def _sequential(bus: RedisBus, n: int, wait: bool) -> tuple[float, float]:
    """Appends per second and the median latency (ms) of one append."""
    append = bus.append_replicated if wait else bus.append
    took: list[float] = []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        await append(STREAM, FIELDS)
        took.append(time.perf_counter() - t)
    return n / (time.perf_counter() - start), statistics.median(took) * 1000


async def _concurrent(bus: RedisBus, n: int, concurrency: int, wait: bool) -> float:
    append = bus.append_replicated if wait else bus.append
    per_task = n // concurrency

    async def caller() -> None:
        for _ in range(per_task):
            await append(STREAM, FIELDS)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    return per_task * concurrency / (time.perf_counter() - start)


async def run(args: argparse.Namespace) -> None:
    async with open_redis_cluster() as cluster:
        client = await open_redis_client(cluster.url)
        assert isinstance(client, ClusterClient)
        bus = RedisBus(client)
        try:
            await _replicas_listed(client)
            await _sequential(bus, 200, True)  # warm up: connections, map
            seq: dict[bool, list[float]] = {False: [], True: []}
            lat: dict[bool, list[float]] = {False: [], True: []}
            conc: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):
                for wait in (False, True):
                    rate, median = await _sequential(bus, args.appends, wait)
                    seq[wait].append(rate)
                    lat[wait].append(median)
                    conc[wait].append(await _concurrent(bus, args.appends, args.concurrency, wait))
        finally:
            await client.aclose()
    for name, rates in (("sequential", seq), (f"concurrent x{args.concurrency}", conc)):
        without, with_wait = statistics.median(rates[False]), statistics.median(rates[True])
        print(
            f"{name:>16}: {without:8.0f}/s without WAIT, {with_wait:8.0f}/s with WAIT, "
            f"ratio {with_wait / without:.2f}"
        )
    print(
        f"{'one append':>16}: median {statistics.median(lat[False]):.3f} ms without WAIT, "
        f"{statistics.median(lat[True]):.3f} ms with WAIT"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000, help="per shape and round")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("warning", "console")
    trio.run(run, args)


if __name__ == "__main__":
    main()
