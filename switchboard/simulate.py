"""``switchboard simulate``: the command, and runs spread over client processes.

The calls themselves are Twilio's side (``switchboard.twilio.load``); this
module is the composition around them: the command line's table, JSON and
SVG, GC settling so the client's own pauses are not read as server latency,
and ``run_simulation_processes``, which starts ``python -m
switchboard.simulate`` children and merges their raw results.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from switchboard import gcpause
from switchboard.checks import check_scripted_reply
from switchboard.outfile import is_stdout, write_text
from switchboard.twilio import load, report
from switchboard.twilio.driver import ReplyCheck
from switchboard.twilio.load import progress_printer
from switchboard.twilio.results import (
    SimulationConfig,
    SimulationResult,
    decode_calls,
    encode_calls,
)
from switchboard.twilio.scenario import Scenario, ScenarioError, load_scenario


async def run_simulation(
    config: SimulationConfig,
    scenario: Scenario,
    *,
    progress: Callable[[SimulationResult, int], Awaitable[None]] | None = None,
) -> SimulationResult:
    """``switchboard.twilio.load.run_simulation`` with the reply check ``config.content``
    asks for: the scripted provider's (``scripted``), or none (``any``)."""
    return await load.run_simulation(
        config, scenario, progress=progress, check=_check_for(config.content)
    )


def _check_for(content: str) -> ReplyCheck | None:
    if content != "scripted":
        return None
    return lambda prompt, reply, complete: check_scripted_reply(prompt, reply, complete=complete)


def write_json(path: str | Path, doc: Mapping[str, Any]) -> None:
    """Write a report document as indented JSON (``-``: to standard output)."""
    write_text(path, json.dumps(doc, indent=2) + "\n")


def write_svg(path: str | Path, svg: str) -> None:
    """Write an SVG document (``.svg`` only: a raster format would need a plotting
    library, which a load tool does not justify)."""
    target = Path(path)
    if not is_stdout(path) and target.suffix.lower() != ".svg":
        raise ValueError(f"plots are written as SVG; use a .svg file name, not {target.name!r}")
    write_text(path, svg)


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


async def run_simulation_processes(
    config: SimulationConfig, scenario_path: str | Path, processes: int
) -> SimulationResult:
    """``run_simulation`` driven from ``processes`` client processes, results merged.

    One Python process saturates before the servers do at about a thousand
    calls; each child runs an even share of the calls (and of the
    concurrency, over the same ramp) and hands back its raw per-turn results,
    so the merged percentiles come from every sample, never from averaged
    percentiles. ``client_cpu_s`` holds each child's CPU seconds.
    """
    scenario = load_scenario(scenario_path)
    processes = max(1, min(processes, config.calls))
    shares = _shares(config.calls, processes)
    conc = _shares(max(config.concurrency, processes), processes)
    result = SimulationResult(config=config, scenario=scenario)
    parts: list[dict[str, Any] | None] = [None] * processes
    with tempfile.TemporaryDirectory(prefix="switchboard-sim-") as tmp:

        async def child(i: int) -> None:
            out = Path(tmp) / f"client-{i}.json"
            share = dataclasses.replace(
                config,
                calls=shares[i],
                concurrency=max(1, conc[i]),
                index_offset=config.index_offset + sum(shares[:i]),
            )
            spec = {"config": dataclasses.asdict(share), "scenario": str(scenario_path),
                    "out": str(out)}  # fmt: skip
            argv = [sys.executable, "-m", "switchboard.simulate", json.dumps(spec)]
            env = {**os.environ, "SWITCHBOARD_LOG_LEVEL": "error"}
            await trio.run_process(argv, env=env, stdin=subprocess.DEVNULL)
            parts[i] = json.loads(out.read_text(encoding="utf-8"))

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(processes):
                nursery.start_soon(child, i)
        result.duration_s = trio.current_time() - started
    for part in parts:
        assert part is not None
        result.calls += decode_calls(part["calls"])
        result.client_cpu_s.append(float(part["cpu_s"]))
    result.calls.sort(key=lambda c: c.index)
    result.started_at = 0.0
    return result


def _client_main(spec_json: str) -> int:
    """A client process of ``run_simulation_processes``: run a share, write raw results."""
    from switchboard.logging import configure_logging

    configure_logging(os.environ.get("SWITCHBOARD_LOG_LEVEL", "error"))
    spec = json.loads(spec_json)
    config = SimulationConfig(**spec["config"])
    scenario = load_scenario(spec["scenario"])
    gcpause.settle()  # the client's own pauses would be read as server latency
    result = trio.run(run_simulation, config, scenario)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    doc = {
        "calls": encode_calls(result),
        "duration_s": result.duration_s,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
    Path(spec["out"]).write_text(json.dumps(doc), encoding="utf-8")
    return 0


def _output_problem(json_out: str | None, plot_out: str | None) -> str | None:
    """What is wrong with where --json and --plot write, or None."""
    if plot_out is not None and not (is_stdout(plot_out) or plot_out.lower().endswith(".svg")):
        return "--plot writes SVG; name the file *.svg or -"
    if is_stdout(json_out) and is_stdout(plot_out):
        return "only one of --json and --plot can be -"
    return None


def _report(result: SimulationResult, url: str, json_out: str | None, plot_out: str | None) -> int:
    """Print the table, write the JSON and SVG; the exit status of the run."""
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if result.calls and all(c.error and "HTTP 403" in c.error for c in result.calls):
        # Every call refused at the webhook or the upgrade: the tokens differ.
        sys.stderr.write(
            f"switchboard simulate: the agent at {url} refused every call (HTTP 403: the "
            "Twilio signature did not match); set TWILIO_AUTH_TOKEN to the server's auth "
            "token (and --public-url to its SWITCHBOARD_PUBLIC_URL if it has one)\n"
        )
        return 2
    doc = result.to_json()
    # With a document on standard output, the table goes to stderr beside the log.
    table_to = sys.stderr if is_stdout(json_out) or is_stdout(plot_out) else sys.stdout
    table_to.write(report.render_table(doc) + "\n")
    if json_out:
        write_json(json_out, doc)
    if plot_out:
        write_svg(plot_out, result.svg())
    return 1 if result.problems else 0


def main(
    *,
    url: str,
    scenario_path: str,
    calls: int,
    concurrency: int,
    public_url: str | None,
    auth_token: str | None,
    json_out: str | None,
    plot_out: str | None,
    seed: int,
    ramp_s: float = 0.0,
    content: str = "scripted",
    provider_ttft_ms: float = 0.0,
    turn_timeout_s: float = 30.0,
    client_processes: int = 1,
) -> int:
    """``switchboard simulate``: run, print the table, write JSON/SVG; 1 on any problem."""
    try:
        scenario = load_scenario(scenario_path)
    except ScenarioError as exc:
        sys.stderr.write(f"switchboard simulate: {exc}\n")
        return 2
    problem = _output_problem(json_out, plot_out)
    if problem is not None:
        sys.stderr.write(f"switchboard simulate: {problem}\n")
        return 2
    config = SimulationConfig(
        url=url,
        calls=calls,
        concurrency=concurrency,
        public_url=public_url,
        auth_token=auth_token,
        seed=seed,
        ramp_s=ramp_s,
        content=content,
        provider_ttft_ms=provider_ttft_ms,
        turn_timeout_s=turn_timeout_s,
    )
    gcpause.settle()  # the client's own pauses would be read as server latency
    if client_processes > 1:
        result = trio.run(run_simulation_processes, config, scenario_path, client_processes)
    else:
        result = trio.run(
            lambda: run_simulation(config, scenario, progress=progress_printer(sys.stderr))
        )
    return _report(result, url, json_out, plot_out)


if __name__ == "__main__":
    sys.exit(_client_main(sys.argv[1]))
