"""GC pauses: start-up objects settle out of the collector's way, pauses are timed."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest
import structlog
from prometheus_client import CollectorRegistry

from switchboard import gcpause


def test_settle_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    # In a child: freezing the test process would change every later test.
    code = (
        "import gc, json; import switchboard.runner, actors.providers.anthropic;"
        "from switchboard import gcpause;"
        "before = len(gc.get_objects()); frozen = gcpause.settle();"
        "print(json.dumps({'before': before, 'frozen': frozen,"
        " 'left': len(gc.get_objects()), 'threshold': gc.get_threshold()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["frozen"] > 50_000  # the imports of a role: what used to be walked
    assert doc["left"] < doc["before"] // 10  # what a full collection walks now
    assert doc["threshold"] == list(gcpause.THRESHOLDS)


def test_every_collection_is_timed_by_generation() -> None:
    registry = CollectorRegistry()
    observer = gcpause.observe(registry)
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        observer.close()
    for generation in ("0", "2"):
        count = registry.get_sample_value(
            "switchboard_gc_pause_seconds_count", {"generation": generation}
        )
        assert count is not None and count >= 1
    assert observer.slowest_s > 0
    assert observer not in gc.callbacks


def test_a_slow_pause_is_logged_and_a_second_observer_replaces_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gcpause, "SLOW_PAUSE_S", 0.0)
    first = gcpause.observe()
    second = gcpause.observe()
    try:
        assert first not in gc.callbacks and second in gc.callbacks
        with structlog.testing.capture_logs() as logs:
            gc.collect(1)
    finally:
        second.close()
    slow = [e for e in logs if e["event"] == "gc_pause_slow"]
    assert slow and slow[0]["generation"] == 1 and slow[0]["pause_ms"] >= 0


def test_the_start_up_collection_is_not_counted_as_a_pause() -> None:
    # settle() collects once before the first call: no caller waits on it, so
    # it must not show on the histogram (a child: settle freezes the process).
    code = (
        "import gc, json; from switchboard import gcpause;"
        "from prometheus_client import CollectorRegistry;"
        "r = CollectorRegistry(); o = gcpause.observe(r); gcpause.settle();"
        "n = lambda: sum(r.get_sample_value('switchboard_gc_pause_seconds_count',"
        " {'generation': str(g)}) or 0 for g in range(3));"
        "settled = n(); gc.collect(2);"
        "print(json.dumps({'settled': settled, 'after': n()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc == {"settled": 0, "after": 1}
