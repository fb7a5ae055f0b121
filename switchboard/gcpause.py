"""Garbage-collector pauses: keep them short, and make them visible.

CPython's cyclic collector stops the whole process while it runs. A full
(generation 2) collection walks every tracked container object, and a
Switchboard process holds ~170,000 of them before it serves a single call
(trio, h11, wsproto, redis, prometheus_client, the anthropic SDK and pydantic
are imported). Measured on the 2-core bench machine: 35-120 ms per full
collection, every call's frames frozen for that long: the whole p99 of a
200-call load run came from two such pauses.

``settle()`` collects once and moves everything that survived start-up into
the permanent generation (``gc.freeze()``), which the collector never walks
again; later collections only see what the calls themselves allocate.
``observe()`` times every collection into a Prometheus histogram and logs a
warning for a pause that long, so an operator can see stalls for what they
are instead of guessing at latency spikes. ``settle()``'s own collection is
not counted: it happens once, before the first call, and no caller waits
on it.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Histogram

log = structlog.get_logger()

# A pause this long is logged: at this length callers hear it.
SLOW_PAUSE_S = 0.050
# Young collections every 10,000 allocations instead of 700, so the objects
# of one turn (entries, frames, a reply's tasks) die young instead of being
# promoted; 50,000 made a young collection itself last up to 69 ms on a busy
# machine. A full collection is considered after 100 middle ones instead of
# 10 (~20 million allocations, tens of seconds under load): cyclic garbage of
# ended calls waits that long, and the pause of walking 1,000 calls' objects
# (60-150 ms measured) comes that much less often.
THRESHOLDS = (10_000, 20, 100)
_settling = False  # settle()'s own collection: long, expected, and before any call
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def settle() -> int:
    """Collect, then exempt every live object from later collections.

    Call it once start-up is done (modules imported, clients built) and before
    the first call; a second call later only adds what was created in between.
    Returns how many objects are now frozen.
    """
    global _settling
    started = time.perf_counter()
    _settling = True
    try:
        gc.collect()
    finally:
        _settling = False
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    frozen = gc.get_freeze_count()
    log.info("gc_settled", frozen=frozen, ms=round((time.perf_counter() - started) * 1000, 1))
    return frozen


class PauseObserver:
    """Times every collection of this process (``gc.callbacks``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.histogram = Histogram(
            "switchboard_gc_pause_seconds",
            "Time the process stood still in the cyclic garbage collector, by generation.",
            ["generation"],
            buckets=BUCKETS,
            registry=registry,
        )
        self._children = {g: self.histogram.labels(str(g)) for g in range(3)}
        self._started = 0.0
        self.slowest_s = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if _settling:
            return
        pause = time.perf_counter() - self._started
        generation = int(info.get("generation", 2))
        self._children[generation].observe(pause)
        self.slowest_s = max(self.slowest_s, pause)
        if pause >= SLOW_PAUSE_S:
            log.warning(
                "gc_pause_slow",
                generation=generation,
                pause_ms=round(pause * 1000, 1),
                collected=info.get("collected"),
            )

    def close(self) -> None:
        """Stop observing (tests; a process observes until it exits)."""
        if self in gc.callbacks:
            gc.callbacks.remove(self)


def observe(registry: CollectorRegistry | None = None) -> PauseObserver:
    """Start timing this process's collections; the histogram goes into ``registry``.

    One observer per process: a second call replaces the first.
    """
    for callback in list(gc.callbacks):
        if isinstance(callback, PauseObserver):
            callback.close()
    observer = PauseObserver(registry if registry is not None else CollectorRegistry())
    gc.callbacks.append(observer)
    return observer
