"""Record the frames each side of a call sent, to compare two commits.

A refactor that must not change behaviour should leave every call's frame
sequence as it was. This records them, per call, for

- every scenario in ``bench/scenarios`` (``scenarios``): a few calls each on
  the dev composition (gateway and actors on a MemoryBus, scripted LLM) in
  this process, on Trio's virtual clock, one call at a time and a fixed seed,
  so that two runs of the same code give the same frames; and
- the tests' in-process calls (``tests``): the test suite run with the
  ``frametap`` plugin, every test that opened a relay socket.

Run it on two commits and diff the directories::

    python bench/frames.py all --out /tmp/frames-before    # on the old commit
    python bench/frames.py all --out /tmp/frames-after
    diff -r /tmp/frames-before /tmp/frames-after

Frames are recorded on the wire (``bench/frametap.py``), so this script runs
unchanged against a checkout from before a module moved: put that checkout
first on ``PYTHONPATH``. Text frames of a streamed reply are split where
token coalescing cut them, which depends on when the bus readers woke up,
even on the virtual clock (and the tests run on the wall clock); so runs of
``text`` frames are joined up to ``last: true`` and only what was said, and
in which order, is compared (``--raw`` keeps every frame as sent).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import trio
import trio.testing

HERE = Path(__file__).resolve().parent
# Run as a script, this folder comes first on sys.path, and bench/bus.py
# would shadow the ``bus`` package: look for packages from the project root.
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path.pop(0)
_spec = importlib.util.spec_from_file_location("frametap", HERE / "frametap.py")
assert _spec is not None and _spec.loader is not None
frametap = sys.modules["frametap"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frametap)

SCENARIOS = sorted((HERE / "scenarios").glob("*.json"))
CALLS_PER_SCENARIO = 2
TOKEN = "frames-token"
# Tests whose calls run in this process (the system tests start processes,
# whose sockets this process cannot see).
TEST_PATHS = (
    "tests/simulator",
    "tests/simulate",
    "tests/e2e_conversation",
    "tests/barge_in_gateway",
    "tests/gateway",
    "tests/conversation",
    "tests/tools",
    "tests/replay",
    "tests/telemetry",
    "tests/system/test_dev_inprocess.py",
)


def _find(name: str, *modules: str) -> Any:
    """``name`` from the first of ``modules`` that has it (the simulator has moved before)."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ModuleNotFoundError, AttributeError):
            continue
    raise ImportError(f"{name} is in none of {modules}")


async def _record_scenario(path: Path) -> dict[str, Any]:
    from bus.memory import MemoryBus
    from switchboard.runner import start_dev
    from switchboard.settings import Settings

    load_scenario = _find("load_scenario", "switchboard.twilio.scenario", "switchboard.simulate")
    config_type = _find("SimulationConfig", "switchboard.twilio.results", "switchboard.simulate")
    run_simulation = _find("run_simulation", "switchboard.simulate")
    settings = Settings.from_env(
        {
            "TWILIO_AUTH_TOKEN": TOKEN,
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_PARTITIONS": "4",
            "SWITCHBOARD_LLM_PROVIDER": "scripted",
            "SWITCHBOARD_SCRIPTED_FIRST_TOKEN_MS": "20",
            "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "5",
        }
    )
    scenario = load_scenario(path)
    with frametap.tapped() as tap:
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, MemoryBus())
            config = config_type(
                url=f"http://127.0.0.1:{port}",
                calls=CALLS_PER_SCENARIO,
                concurrency=1,
                auth_token=TOKEN,
                seed=7,
            )
            result = await run_simulation(config, scenario)
            nursery.cancel_scope.cancel()
    # What the simulator found wrong is part of what happened: keep it.
    return {"violations": result.to_json()["violations"], "calls": tap.calls()}


def record_scenarios(out: Path) -> None:
    from switchboard.logging import configure_logging

    configure_logging("warning")
    (out / "scenarios").mkdir(parents=True, exist_ok=True)
    for path in SCENARIOS:
        clock = trio.testing.MockClock(autojump_threshold=0)
        recorded = trio.run(_record_scenario, path, clock=clock)
        _write(out / "scenarios" / f"{path.stem}.json", recorded)
        print(f"{path.stem}: {len(recorded['calls'])} calls", file=sys.stderr)


def _run_tests(root: Path, target: Path) -> dict[str, Any]:
    env = dict(os.environ, FRAMETAP_OUT=str(target))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(HERE)) if p)
    paths = [p for p in TEST_PATHS if (root / p).exists()]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "frametap", "-p", "no:cacheprovider"]
    done = subprocess.run([*cmd, *paths], cwd=root, env=env, check=False)
    if done.returncode not in (0, 1):  # 1: some tests failed (they are marked)
        raise SystemExit(f"pytest could not run the tests (exit {done.returncode})")
    recorded: dict[str, Any] = json.loads(target.read_text())
    return join_text(recorded) if _join else recorded


def record_tests(out: Path, root: Path, runs: int) -> None:
    """Each test's calls; a test whose calls differ between ``runs`` runs is unstable.

    Tests run on the wall clock, and some frames depend on it (when a modelled
    speech chunk ends relative to the next prompt, say). Such a test is
    written as ``{"unstable": N}`` (N different recordings) instead of a
    recording that a later run could not be compared with; a test that
    failed in any run as ``{"failed": N}`` (in N runs).
    """
    out.mkdir(parents=True, exist_ok=True)
    target = out / "tests.json"
    seen = [_run_tests(root, target) for _ in range(runs)]
    result: dict[str, Any] = {}
    for test in sorted(set().union(*seen)):
        failed = sum(1 for run in seen if run.get(test) == frametap.FAILED)
        variants = {json.dumps(run.get(test), sort_keys=True) for run in seen}
        if failed:
            result[test] = {"failed": failed}
        elif len(variants) == 1:
            result[test] = seen[0][test]
        else:
            result[test] = {"unstable": len(variants)}
    target.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    odd = Counter(next(iter(v)) for v in result.values() if isinstance(v, dict))
    print(
        f"tests: {len(result)} with calls, {odd['unstable']} unstable, {odd['failed']} failed",
        file=sys.stderr,
    )


def join_text(node: Any) -> Any:
    """Join runs of ``text`` frames up to ``last: true`` (see the module docstring)."""
    if isinstance(node, dict):
        return {k: join_text(v) for k, v in node.items()}
    if not isinstance(node, list):
        return node
    joined: list[Any] = []
    for item in node:
        item = join_text(item)
        prev = joined[-1] if joined else None
        if (
            isinstance(item, dict)
            and item.get("type") == "text"
            and isinstance(prev, dict)
            and prev.get("type") == "text"
            and not prev.get("last")
            and prev.get("lang") == item.get("lang")
            and prev.get("interruptible") == item.get("interruptible")
            and prev.get("preemptible") == item.get("preemptible")
        ):
            joined[-1] = {
                **prev,
                "token": prev["token"] + item["token"],
                "last": item.get("last", False),
            }
        else:
            joined.append(item)
    return joined


_join = True


def _write(path: Path, data: Any) -> None:
    if _join:
        data = join_text(data)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    global _join
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("scenarios", "tests", "all"))
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument(
        "--root", type=Path, default=Path.cwd(), help="checkout whose tests to run (tests)"
    )
    parser.add_argument("--raw", action="store_true", help="keep text frames as split")
    parser.add_argument("--runs", type=int, default=3, help="runs of the tests to compare")
    args = parser.parse_args(argv)
    _join = not args.raw
    if args.what in ("scenarios", "all"):
        record_scenarios(args.out)
    if args.what in ("tests", "all"):
        record_tests(args.out, args.root.resolve(), args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
