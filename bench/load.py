"""Load, side by side: the same simulated calls against four servers in one run.

- floor: a bare trio-websocket server in its own process that answers each
  final prompt inline with the scripted reply (no bus, no actors, no HTTP);
- dev: ``switchboard dev`` (gateway and actors in one process, memory bus);
- redis: ``switchboard gateway`` (``--gateways N`` of them) + ``actor
  conversation`` + ``actor llm`` on a real redis-server started here, with
  partial prompts on and preemptive replies off (final prompts answered);
- redis-preempt: the same with preemptive replies on (a held reply started
  on a settled interim prompt, heard at once when the final one matches);
- redis-interims: ``redis`` with every interim prompt put on the bus
  (``SWITCHBOARD_INTERIM_PROMPTS=on``) though nothing reads it: what the
  interim prompts cost the hot path when the gateway does not hold them back;
- peer: ``bench/peer/server.js``, one Node.js process with ``ws``, written the
  way Twilio's quick-start samples are.

Every server uses the same provider timing (time to first token, gap between
words), so ``overhead = first token at the caller - provider TTFT`` is what the
server itself adds, and the response latency (final prompt sent -> first
token at the caller) is what the caller waits. For the Redis set-ups the
bench also reads the facts back: output tokens billed, and how many
speculations started, were adopted and discarded, with the output tokens
the discarded ones cost. The calls come from ``switchboard.twilio.load`` in this
process (checked: protocol, ``last: true``, lost/misordered/fenced tokens).
Only ratios within one run mean much on a shared machine.

    python bench/load.py [--calls 50] [--concurrency 50] [--targets floor,dev,redis,peer]
                         [--ttft-ms 300] [--gap-ms 20] [--gateways 1] [--docs]

A Redis target may add settings of its own: ``redis-preempt+SWITCHBOARD_SETTLE_MS=50``.
``--docs`` rewrites the "Load" section of docs/BENCHMARKS.md with the figures.
``python bench/load.py floor-server`` runs the floor alone (used by the bench).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio_websocket

# Run as a script, this folder comes first on sys.path, and its bench/bus.py
# would shadow the ``bus`` package: look for packages from the project root.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from actors.providers.scripted import scripted_reply
from switchboard import gcpause
from switchboard.logging import configure_logging
from switchboard.simulate import run_simulation, run_simulation_processes, write_json, write_svg
from switchboard.testing.procs import open_switchboard
from switchboard.testing.redis_server import open_redis_server
from switchboard.twilio import report
from switchboard.twilio.load import progress_printer
from switchboard.twilio.results import SimulationConfig, SimulationResult
from switchboard.twilio.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "bench" / "peer"
DOCS = ROOT / "docs" / "BENCHMARKS.md"
TWIML_FLOOR = (
    '<Response><Connect><ConversationRelay url="ws://127.0.0.1:{port}/relay" '
    'dtmfDetection="true"/></Connect></Response>'
)
TARGETS = ("floor", "dev", "redis", "redis-preempt", "redis-interims", "peer")
# Each Redis set-up's settings beyond the shared ones.
REDIS_SETUPS: dict[str, dict[str, str]] = {
    "redis": {"SWITCHBOARD_PARTIAL_PROMPTS": "true", "SWITCHBOARD_PREEMPTIVE": "false"},
    "redis-preempt": {"SWITCHBOARD_PARTIAL_PROMPTS": "true", "SWITCHBOARD_PREEMPTIVE": "true"},
    "redis-interims": {
        "SWITCHBOARD_PARTIAL_PROMPTS": "true",
        "SWITCHBOARD_PREEMPTIVE": "false",
        "SWITCHBOARD_INTERIM_PROMPTS": "true",
    },
}
FACTS: dict[str, dict[str, Any]] = {}  # set-up -> what its facts say (Redis set-ups)
CPU: dict[str, list[dict[str, Any]]] = {}  # set-up -> CPU per process of its run


# --------------------------------------------------------------------------- the floor


async def serve_floor(ttft_ms: float, gap_ms: float) -> None:
    """The floor server: inline scripted replies, history in memory, one process."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        history: list[dict[str, str]] = []
        async with trio.open_nursery() as nursery:
            current: list[trio.CancelScope] = []

            async def answer(scope: trio.CancelScope) -> None:
                with scope:
                    reply = scripted_reply(history)
                    if ttft_ms:
                        await trio.sleep(ttft_ms / 1000)
                    words = reply.split(" ")
                    for i, word in enumerate(words):
                        if i and gap_ms:
                            await trio.sleep(gap_ms / 1000)
                        token = word + (" " if i < len(words) - 1 else "")
                        await ws.send_message(json.dumps({"type": "text", "token": token}))
                    await ws.send_message(json.dumps({"type": "text", "token": "", "last": True}))
                    history.append({"role": "assistant", "content": reply})

            try:
                while True:
                    msg = json.loads(await ws.get_message())
                    kind = msg.get("type")
                    if kind in ("prompt", "interrupt") and (kind == "interrupt" or msg["last"]):
                        for scope in current:
                            scope.cancel()
                        current.clear()
                    if kind == "prompt" and msg.get("last"):
                        history.append({"role": "user", "content": msg["voicePrompt"]})
                        scope = trio.CancelScope()
                        current.append(scope)
                        nursery.start_soon(answer, scope)
            except trio_websocket.ConnectionClosed:
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        sys.stdout.write(json.dumps({"event": "floor_ready", "port": server.port}) + "\n")
        sys.stdout.flush()


@asynccontextmanager
async def _open_child(argv: list[str], env: dict[str, str]) -> AsyncIterator[int]:
    """A child printing ``{"port": N}`` as its first stdout line; yields N."""
    async with trio.open_nursery() as nursery:
        proc = await trio.lowlevel.open_process(
            argv, env={**os.environ, **env}, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        try:
            assert proc.stdout is not None
            buffer = b""
            with trio.fail_after(30):
                while b"\n" not in buffer:
                    chunk = await proc.stdout.receive_some(4096)
                    if not chunk:
                        raise RuntimeError(f"{argv} exited before it was ready")
                    buffer += chunk
            yield int(json.loads(buffer.split(b"\n", 1)[0])["port"])
        finally:
            with trio.CancelScope(shield=True):
                proc.terminate()
                with trio.move_on_after(5):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            nursery.cancel_scope.cancel()


def _port(events: list[dict[str, Any]]) -> int:
    for event in events:
        if event.get("event") == "switchboard_ready" and "url" in event:
            return int(str(event["url"]).rsplit(":", 1)[1])
    raise RuntimeError("no ready event with a url")


@asynccontextmanager
async def open_target(
    name: str, ttft_ms: float, gap_ms: float, gateways: int
) -> AsyncIterator[tuple[list[str], str | None]]:
    """Start one set-up; yield its base URLs and the fixed TwiML (floor only)."""
    env = {
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_SCRIPTED_FIRST_TOKEN_MS": str(ttft_ms),
        "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": str(gap_ms),
        "SWITCHBOARD_LOG_LEVEL": "warning",
        "TWILIO_AUTH_TOKEN": "",
        "ANTHROPIC_API_KEY": "",
        "SWITCHBOARD_WELCOME_GREETING": "",
    }
    if name == "floor":
        argv = [sys.executable, str(Path(__file__)), "floor-server"]
        argv += ["--ttft-ms", str(ttft_ms), "--gap-ms", str(gap_ms)]
        async with _open_child(argv, {}) as port:
            yield [f"http://127.0.0.1:{port}"], TWIML_FLOOR.format(port=port)
    elif name == "peer":
        if not (PEER / "node_modules" / "ws").is_dir():
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError("the peer needs Node.js and npm")
            await trio.run_process([npm, "install", "--prefix", str(PEER), "--no-audit"])
        node = shutil.which("node") or "node"
        peer_env = {"PORT": "0", "FIRST_TOKEN_MS": str(ttft_ms), "TOKEN_GAP_MS": str(gap_ms)}
        async with _open_child([node, str(PEER / "server.js")], peer_env) as port:
            yield [f"http://127.0.0.1:{port}"], None
    elif name == "dev":
        env["SWITCHBOARD_LOG_LEVEL"] = "info"  # the ready event carries the port
        async with open_switchboard("dev", "--port", "0", env=env) as dev:
            yield [f"http://127.0.0.1:{_port(dev.events)}"], None
    elif _base(name) in REDIS_SETUPS:
        async with open_redis_server() as redis, trio.open_nursery() as nursery:
            renv = dict(env, SWITCHBOARD_REDIS_URL=redis.url, SWITCHBOARD_LOG_LEVEL="info")
            renv.update(REDIS_SETUPS[_base(name)])
            renv.update(_overrides(name))
            urls: list[str] = []
            stop = trio.Event()

            async def hold(
                args: tuple[str, ...], env: dict[str, str], task_status: trio.TaskStatus[None]
            ) -> None:
                async with open_switchboard(*args, env=env) as proc:
                    if args[0] == "gateway":
                        urls.append(f"http://127.0.0.1:{_port(proc.events)}")
                    task_status.started()
                    await stop.wait()

            await nursery.start(hold, ("actor", "conversation"), renv)
            await nursery.start(hold, ("actor", "llm"), renv)
            for i in range(gateways):
                gw_env = dict(renv, SWITCHBOARD_GATEWAY_ID=f"bench-gw-{i}")
                await nursery.start(hold, ("gateway", "--port", "0"), gw_env)
            try:
                yield urls, None
                FACTS[name] = await trio.to_thread.run_sync(_read_facts, redis.url)
            finally:
                stop.set()
    else:
        raise ValueError(f"unknown target {name!r}")


def _base(target: str) -> str:
    """The set-up a target names: ``redis-preempt+SWITCHBOARD_SETTLE_MS=50`` is
    ``redis-preempt`` with that setting."""
    return target.split("+", 1)[0]


def _overrides(target: str) -> dict[str, str]:
    """The settings a target adds to its set-up's (``+NAME=VALUE`` each)."""
    pairs = [p.split("=", 1) for p in target.split("+")[1:]]
    return {k: v for k, v in pairs}


# Stages read back from the facts: name -> (from fact, to fact), both keyed by
# the caller event the reply answers (a held reply's LLM facts carry the
# interim prompt's seq, so they join no final prompt: the LLM stage counts
# the requests answered as usual).
_STAGES = {
    "gateway_to_conversation": ("prompt_received", "prompt_applied"),
    "llm_queue": ("llm_requested", "request_taken"),
}
_STAGE_FACTS = frozenset({"first_token_sent", *(f for pair in _STAGES.values() for f in pair)})


def _read_facts(url: str) -> dict[str, Any]:
    """Output tokens and speculations, from every fact stream of the run's Redis."""
    import redis as redis_py  # administrative, after the calls: redis-py is fine here

    out: dict[str, Any] = {"output_tokens": 0, "held_output_tokens": 0, "wasted_output_tokens": 0}
    for name in ("started", "adopted", "discarded", "shed"):
        out[f"speculations_{name}"] = 0
    # (call, session, reply_to) -> fact -> t_ms: where a turn's time went.
    turns: dict[tuple[str, str, int], dict[str, float]] = {}
    client = redis_py.Redis.from_url(url, decode_responses=True)
    try:
        for stream in client.scan_iter(match="*events*", _type="stream"):
            for _, fields in client.xrange(stream):
                rest = json.loads(fields["d"])
                body = rest.get("body", {})
                fact = body.get("fact", "")
                if fact in _STAGE_FACTS and isinstance(body.get("reply_to"), int):
                    key = (fields["c"], rest.get("session", ""), body["reply_to"])
                    turns.setdefault(key, {}).setdefault(fact, float(body["t_ms"]))
                    if fact == "first_token_sent" and "latency_ms" in body:
                        turns[key]["latency_ms"] = float(body["latency_ms"])
                if fact == "completion_done":
                    tokens = int((body.get("usage") or {}).get("output_tokens", 0))
                    out["output_tokens"] += tokens
                    if body.get("held"):
                        out["held_output_tokens"] += tokens
                elif fact == "speculation_wasted":
                    out["wasted_output_tokens"] += int(body.get("output_tokens", 0))
                elif fact.startswith("speculation_") and f"speculations_{fact[12:]}" in out:
                    out[f"speculations_{fact[12:]}"] += 1
    finally:
        client.close()
    for stage, (start, end) in _STAGES.items():
        spans = sorted(t[end] - t[start] for t in turns.values() if start in t and end in t)
        out[f"{stage}_p50_ms"] = round(spans[len(spans) // 2], 1) if spans else None
        out[f"{stage}_p95_ms"] = round(spans[int(len(spans) * 0.95)], 1) if spans else None
    waits = sorted(t["latency_ms"] for t in turns.values() if "latency_ms" in t)
    out["gateway_response_p50_ms"] = round(waits[len(waits) // 2], 1) if waits else None
    heard = out["output_tokens"] - out["wasted_output_tokens"]
    out["extra_output_pct"] = round(100 * out["wasted_output_tokens"] / heard, 1) if heard else None
    return out


def _descendants_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every live descendant of this process: pid -> (name, s)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        fields = raw[raw.rindex(")") + 2 :].split()
        words = [w.decode(errors="replace") for w in cmd if w]
        # "switchboard actor llm", "redis-server", "load.py floor-server", ...
        label = " ".join([Path(w).name for w in words if not w.startswith("-")][:4])
        stats[int(entry.name)] = (int(fields[1]), label, (int(fields[11]) + int(fields[12])) / tick)
    mine = {os.getpid()}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _, _) in stats.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    return {pid: (stats[pid][1], stats[pid][2]) for pid in mine if pid in stats}


def _cpu_report(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
    result: SimulationResult, seconds: float,
) -> list[dict[str, Any]]:  # fmt: skip
    """% of one core per process over the run; the client processes' own figures."""
    rows = []
    for pid, (label, cpu) in sorted(after.items()):
        if pid == os.getpid() and result.client_cpu_s:
            label = "bench (parent)"
        elif pid == os.getpid():
            label = "bench (client)"
        used = cpu - before.get(pid, (label, 0.0))[1]
        rows.append({"process": label, "cpu_s": round(used, 2),
                     "core_pct": round(100 * used / seconds, 1)})  # fmt: skip
    for i, used in enumerate(result.client_cpu_s):
        rows.append({"process": f"client {i}", "cpu_s": round(used, 2),
                     "core_pct": round(100 * used / seconds, 1)})  # fmt: skip
    return rows


async def measure(name: str, args: argparse.Namespace, progress: bool) -> SimulationResult:
    scenario = load_scenario(args.scenario)
    async with open_target(name, args.ttft_ms, args.gap_ms, args.gateways) as (urls, twiml):
        # Calls are split evenly over the gateways; the results merge into one.
        share = [args.calls // len(urls) + (i < args.calls % len(urls)) for i in range(len(urls))]
        results: list[SimulationResult] = []

        async def run_on(url: str, calls: int) -> None:
            config = SimulationConfig(
                url=url,
                calls=calls,
                concurrency=max(1, args.concurrency * calls // args.calls),
                seed=args.seed,
                ramp_s=args.ramp,
                provider_ttft_ms=args.ttft_ms,
                twiml=twiml,
                label=name,
            )
            if args.client_processes > 1:
                procs = max(1, args.client_processes // len(urls))
                results.append(await run_simulation_processes(config, args.scenario, procs))
                return
            show = progress_printer(sys.stderr) if progress and url == urls[0] else None
            results.append(await run_simulation(config, scenario, progress=show))

        before = _descendants_cpu()
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for url, calls in zip(urls, share, strict=True):
                nursery.start_soon(run_on, url, calls)
        after = _descendants_cpu()
        seconds = trio.current_time() - started
    merged = results[0]
    for other in results[1:]:
        offset = len(merged.calls)
        for call in other.calls:
            call.index += offset
        merged.calls += other.calls
        merged.duration_s = max(merged.duration_s, other.duration_s)
        merged.client_cpu_s += other.client_cpu_s
    cpu = _cpu_report(before, after, merged, seconds)
    sys.stderr.write(
        "CPU, % of one core over the run: "
        + ", ".join(f"{r['process']} {r['core_pct']}" for r in cpu)
        + "\n"
    )
    CPU[name] = cpu
    merged.config = SimulationConfig(
        url=",".join(urls),
        calls=args.calls,
        concurrency=args.concurrency,
        seed=args.seed,
        provider_ttft_ms=args.ttft_ms,
        label=name,
    )
    return merged


def _row(name: str, doc: dict[str, Any], floor: dict[str, Any] | None,
         peer: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    over = doc["latency_ms"]["overhead"]
    c = doc["counts"]
    row: dict[str, Any] = {
        "target": name,
        "turns": over["n"],
        "peak_open_calls": c.get("peak_open_calls"),
        "overhead_p50_ms": over["p50"],
        "overhead_p95_ms": over["p95"],
        "overhead_p99_ms": over["p99"],
        "response_p50_ms": doc["latency_ms"]["first_token"]["p50"],
        "response_p95_ms": doc["latency_ms"]["first_token"]["p95"],
        "turn_p50_ms": doc["latency_ms"]["turn"]["p50"],
        "turn_p99_ms": doc["latency_ms"]["turn"]["p99"],
        "problems": c["calls_failed"]
        + c["protocol_violations"]
        + c["missing_last"]
        + c["lost_tokens"]
        + c["misordered_tokens"]
        + c["fenced_leaks"]
        + c["stray_frames"],
    }
    if peer is not None:
        mine, theirs = row["response_p50_ms"], peer["latency_ms"]["first_token"]["p50"]
        row["response_vs_peer"] = round(mine / theirs, 2) if mine is not None and theirs else None
    row.update(FACTS.get(name, {}))
    for base_name, base in (("floor", floor), ("peer", peer)):
        if base is None:
            continue
        b = base["latency_ms"]["overhead"]
        for q in ("p50", "p99"):
            mine, theirs = over[q], b[q]
            row[f"{q}_vs_{base_name}"] = (
                round(mine / theirs, 2) if mine is not None and theirs else None
            )
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| set-up | turns | calls open at once | overhead p50 ms | p95 ms | p99 ms | "
        "response p50 ms | response p95 ms | response p50 / peer's | turn p50 ms | "
        "p50 / floor | p99 / floor | p50 / peer | p99 / peer | problems |"
    )
    out = [head, "|" + "|".join("---" for _ in range(15)) + "|"]

    def f(v: Any) -> str:
        return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    for r in rows:
        cells = [r["target"], r["turns"], r["peak_open_calls"], r["overhead_p50_ms"]]
        cells += [r["overhead_p95_ms"], r["overhead_p99_ms"], r["response_p50_ms"]]
        cells += [r["response_p95_ms"], r.get("response_vs_peer"), r["turn_p50_ms"]]
        cells += [r.get("p50_vs_floor"), r.get("p99_vs_floor"), r.get("p50_vs_peer")]
        cells += [r.get("p99_vs_peer"), r["problems"]]
        out.append("| " + " | ".join(f(c) for c in cells) + " |")
    return "\n".join(out)


def _tokens_table(rows: list[dict[str, Any]]) -> str:
    """Output tokens and speculations of the set-ups whose facts were read."""
    out = [
        "| set-up | output tokens | of held replies | wasted (discarded) | extra % | "
        "speculations started | adopted | discarded | shed | "
        "gateway -> conversation p50 / p95 ms | LLM queue p50 / p95 ms | "
        "response p50 ms (gateway's clock) |",
        "|" + "|".join("---" for _ in range(12)) + "|",
    ]
    for r in rows:
        if "output_tokens" not in r:
            continue
        cells = [r["target"], r["output_tokens"], r["held_output_tokens"]]
        cells += [r["wasted_output_tokens"], r["extra_output_pct"], r["speculations_started"]]
        cells += [r["speculations_adopted"], r["speculations_discarded"], r["speculations_shed"]]
        cells += [f"{r['gateway_to_conversation_p50_ms']} / {r['gateway_to_conversation_p95_ms']}"]
        cells += [f"{r['llm_queue_p50_ms']} / {r['llm_queue_p95_ms']}"]
        cells += [r["gateway_response_p50_ms"]]
        out.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    return "\n".join(out)


def update_docs(section: str) -> None:
    """Replace (or append) the ``## Load`` section of docs/BENCHMARKS.md."""
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    start = text.find("\n## Load\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + section + (text[end + 1 :] if end >= 0 else "")
    DOCS.write_text(text, encoding="utf-8")


async def run(
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
    docs: dict[str, dict[str, Any]] = {}
    svgs: dict[str, str] = {}
    for name in args.targets:
        sys.stderr.write(f"-- {name}\n")
        result = await measure(name, args, progress=not args.quiet)
        if not args.quiet and sys.stderr.isatty():
            sys.stderr.write("\n")
        docs[name] = result.to_json()
        svgs[name] = result.svg()
        sys.stderr.write(report.render_table(docs[name]) + "\n")
    rows = [_row(n, d, docs.get("floor"), docs.get("peer")) for n, d in docs.items()]
    return rows, docs, svgs


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    floor = sub.add_parser("floor-server")
    floor.add_argument("--ttft-ms", type=float, default=0.0)
    floor.add_argument("--gap-ms", type=float, default=0.0)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--scenario", default=str(ROOT / "bench" / "scenarios" / "load.json"))
    parser.add_argument("--ttft-ms", type=float, default=300.0, help="provider time to first token")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="provider gap between tokens")
    parser.add_argument("--gateways", type=int, default=1, help="gateway processes (redis)")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds to start all calls")
    parser.add_argument(
        "--client-processes", type=int, default=1,
        help="drive the calls from this many client processes (results merged)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", dest="json_out", help="write every report here")
    parser.add_argument("--plot-dir", help="write one SVG per set-up here")
    parser.add_argument("--docs", action="store_true", help="rewrite docs/BENCHMARKS.md#Load")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    # Every Python process of the bench, ours and the floor alike, settles its
    # start-up objects out of the collector's way, as `switchboard` roles do.
    configure_logging("error")  # stdout carries the floor's port line
    gcpause.settle()
    if args.mode == "floor-server":
        trio.run(serve_floor, args.ttft_ms, args.gap_ms)
        return
    args.targets = [t for t in args.targets.split(",") if t]
    bad = [t for t in args.targets if "+" in t and any("=" not in p for p in t.split("+")[1:])]
    if bad:
        parser.error(f"a target's settings are +NAME=VALUE, got {bad}")
    unknown = {_base(t) for t in args.targets} - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {TARGETS}")
    rows, docs, svgs = trio.run(run, args)
    if args.plot_dir:
        Path(args.plot_dir).mkdir(parents=True, exist_ok=True)
        for name, svg in svgs.items():
            write_svg(Path(args.plot_dir) / f"load-{name}.svg", svg)
    table = _table(rows)
    sys.stdout.write(table + "\n\n" + _tokens_table(rows) + "\n")
    if args.json_out:
        write_json(args.json_out, {"rows": rows, "reports": docs, "cpu": CPU, "facts": FACTS})
    if args.docs:
        command = "python bench/load.py " + " ".join(sys.argv[1:])
        today = datetime.date.today().isoformat()
        section = (
            "## Load\n\n"
            f"`{command}` on {today}, {os.cpu_count()} cores ({platform.machine()}, "
            f"Python {platform.python_version()}). {args.calls} calls, "
            f"{args.concurrency} at once, scenario `{Path(args.scenario).name}`; provider "
            f"TTFT {args.ttft_ms:g} ms, {args.gap_ms:g} ms between words; "
            f"{args.gateways} gateway(s) in the redis set-up. Overhead = first token at "
            "the caller - provider TTFT. Ratios compare overheads within this run.\n\n"
            f"{table}\n"
        )
        update_docs(section)


if __name__ == "__main__":
    main()
