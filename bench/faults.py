"""The fault suite: 20 live calls on the Redis processes while one thing breaks.

For each fault in turn, a fresh redis-server and real CLI processes (two
gateways behind a small TCP balancer, two conversation workers, two LLM
workers, the scripted provider) serve 20 simulated calls of 3 prompts each;
once a third of the turns are done, the fault happens. A session that fails
is resumed as Twilio would: the action callback goes through the balancer
and the call follows the TwiML it gets. A supervisor restarts any role
that exits, as Kubernetes would, and counts the restarts. Afterwards every
call's persisted history is read from Redis and compared with what the
callers said and heard:

- **completed**: calls whose every prompt got a reply closed by ``last``;
- **resumed**: sessions that failed and were followed by a resume;
- **lost** / **doubled**: prompts missing from, or repeated in, the history;
- **heard twice**: words a caller heard beyond the one reply the scripted
  provider gives for the history it answered (a repeated span);
- **longest silence**: the longest wait from a prompt to its first token,
  or between two tokens of a reply;
- **restarts**: roles the supervisor restarted (a crash loop shows as many).

Faults: ``kill -9`` of each role, Redis stopped (``SIGSTOP``) for 10 s, a
Redis restart (empty, no persistence), Redis at ``maxmemory`` with
``noeviction`` for 10 s, a conversation worker paused past its lease, one
caller flooding ``tokensPlayed``, and 2,000 idle upgraded sockets.

    python bench/faults.py [--calls 20] [--only NAME,...] [--json FILE] [--explain]

Prints one table row per fault (the table in docs/FAULTS.md). Targets: 0
lost, 0 doubled, 0 heard twice, no crash loop, no silence over 3 s that
the fault itself does not explain.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

# Run as a script, this folder comes first on sys.path, and its bench/bus.py
# would shadow the ``bus`` package: look for packages from the project root.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from actors.history import request_messages
from actors.providers.scripted import scripted_reply
from bus.keys import Keys
from bus.resp import RedisClient
from gateway.config import DEFAULT_REPLY_APOLOGY
from relay.signature import SIGNATURE_HEADER, sign
from relay.twiml import TwimlError
from switchboard.logging import configure_logging
from switchboard.testing.balancer import open_balancer
from switchboard.testing.procs import SwitchboardProcess, open_switchboard
from switchboard.testing.redis_server import RedisServerHandle, free_port, open_redis_server
from switchboard.twilio import open_call
from switchboard.twilio.call import SimulatedCall
from switchboard.twilio.errors import SessionClosed, SimulatorError

TOKEN = "fault-suite-token"
PROMPTS = ["My name is Ada.", "I would like to book a table.", "What did I tell you so far?"]
PARTITIONS = 8
LEASE_TTL_MS = 3000
KEYS = Keys(partitions=PARTITIONS)
REPLY_PATIENCE_S = 60.0
REANSWER_PATIENCE_S = 10.0
FLOOD_FRAMES = 20_000
IDLE_SOCKETS = 2000


def _env(redis_url: str, name: str, port: int) -> dict[str, str]:
    return {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_WORKER_ID": name,
        "SWITCHBOARD_GATEWAY_ID": name,
        "SWITCHBOARD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SWITCHBOARD_LLM_PROVIDER": "scripted",
        "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "20",
        "SWITCHBOARD_PARTITIONS": str(PARTITIONS),
        "SWITCHBOARD_LEASE_TTL_MS": str(LEASE_TTL_MS),
        "SWITCHBOARD_LLM_CLAIM_IDLE_MS": "1500",
        "SWITCHBOARD_LOG_LEVEL": "info",
        "ANTHROPIC_API_KEY": "",
    }


ROLES = {
    "gateway-1": ("gateway",),
    "gateway-2": ("gateway",),
    "conv-1": ("actor", "conversation"),
    "conv-2": ("actor", "conversation"),
    "llm-1": ("actor", "llm"),
    "llm-2": ("actor", "llm"),
}


class Supervisor:
    """Keeps every role running: restarts one that exits, and counts it."""

    def __init__(self, redis_url: str, port: int) -> None:
        self.redis_url = redis_url
        self.port = port  # the balancer's: what Twilio (the simulator) calls
        self.gateway_ports = {name: free_port() for name in ROLES if name.startswith("gateway")}
        self.procs: dict[str, SwitchboardProcess] = {}
        self.restarts: dict[str, int] = {name: 0 for name in ROLES}
        self.ready = {name: trio.Event() for name in ROLES}
        self.stopping = False

    async def keep(self, name: str) -> None:
        args = ROLES[name]
        if name in self.gateway_ports:
            args = (*args, "--port", str(self.gateway_ports[name]))
        while True:
            try:
                async with open_switchboard(
                    *args, env=_env(self.redis_url, name, self.port)
                ) as proc:
                    self.procs[name] = proc
                    self.ready[name].set()
                    await proc.process.wait()
            except RuntimeError:
                pass  # exited before it was ready: a restart like any other
            if self.stopping:
                return
            self.restarts[name] += 1
            await trio.sleep(0.5)  # a crash loop would show as a count, not a spin


@dataclass
class CallRecord:
    sid: str = ""
    said: int = 0
    resumes: int = 0
    replies: list[str] = field(default_factory=list)
    complete: int = 0
    longest_gap_s: float = 0.0
    error: str = ""
    # What the agent said first on a resumed session, for the turn cut off.
    answered_again: dict[int, str] = field(default_factory=dict)


@dataclass
class Row:
    fault: str
    calls: int
    completed: int = 0
    resumed: int = 0
    lost: int = 0
    doubled: int = 0
    heard_twice: int = 0
    longest_silence_s: float = 0.0
    restarts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    fault_s: float = 0.0
    detail: str = ""
    said_again: int = 0
    apologised: int = 0
    never_published: int = 0
    notes: list[str] = field(default_factory=list)  # per call, for --explain


async def _turns(call: SimulatedCall, record: CallRecord, progress: Callable[[], None]) -> None:
    """Say the prompts not yet said on ``call``; raises when its session ends."""
    while record.said < len(PROMPTS):
        text = PROMPTS[record.said]
        last = [trio.current_time()]

        async def on_token(_: Any, last: list[float] = last) -> None:
            now = trio.current_time()
            record.longest_gap_s = max(record.longest_gap_s, now - last[0])
            last[0] = now

        record.said += 1
        await call.prompt(text)
        with trio.fail_after(REPLY_PATIENCE_S):
            reply = await call.reply(on_token=on_token)
        record.replies.append(reply.text)
        record.complete += int(reply.complete)
        progress()


async def _answered_again(call: SimulatedCall, record: CallRecord) -> None:
    """After a resume the agent answers the prompt the failure cut off
    (``actors.conversation.cutoff``): the caller listens for that first.

    None within ``REANSWER_PATIENCE_S`` (the prompt died with the gateway
    before it reached the bus): the turn stays cut off, and the call goes on.
    """
    with trio.move_on_after(REANSWER_PATIENCE_S):
        reply = await call.reply()
        if reply.complete:
            record.answered_again[len(record.replies) - 1] = reply.text


async def _converse(url: str, record: CallRecord, progress: Callable[[], None]) -> None:
    """One call; a session that fails is resumed as Twilio would (the action's TwiML).

    The prompt whose reply was cut off is not said again: the agent answers
    it on the new session, and the call goes on with the next one.
    """
    try:
        async with open_call(url, auth_token=TOKEN) as call:
            record.sid = call.call_sid
            try:
                await _turns(call, record, progress)
                return
            except SessionClosed:
                await call.wait_ended()
            # Also when the last prompt was the one cut off: it is answered
            # on the new session before the call ends.
            while record.resumes < 3 and (
                len(record.replies) < record.said or record.said < len(PROMPTS)
            ):
                record.resumes += 1
                cut = len(record.replies) < record.said
                if cut:
                    record.replies.append("")  # the turn cut off by the failure
                async with call.follow_action() as resumed:
                    try:
                        if cut:
                            await _answered_again(resumed, record)
                        await _turns(resumed, record, progress)
                        return
                    except SessionClosed:
                        await resumed.wait_ended()
                        call = resumed
    except (SimulatorError, TwimlError, trio.TooSlowError, OSError) as exc:
        # TwimlError: the action callback failed, so Twilio would hang up.
        record.error = f"{type(exc).__name__}: {exc}"[:200]


async def _history(redis_url: str, sid: str) -> list[dict[str, Any]] | None:
    client = RedisClient.from_url(redis_url)
    try:
        raw = await client.execute("GET", KEYS.state(sid))
    finally:
        await client.aclose()
    if raw is None:
        return None
    history: list[dict[str, Any]] = json.loads(raw)["history"]
    return history


def _expected(history: list[dict[str, Any]], prompt_at: int) -> str:
    """The scripted provider's reply to the history up to the prompt at ``prompt_at``
    (consecutive caller messages joined, as the conversation's requests join them)."""
    return scripted_reply(request_messages(history[: prompt_at + 1]))


def _take_answers_again(row: Row, rec: CallRecord, history: list[dict[str, Any]] | None) -> None:
    """A resumed session's first reply answers the prompt the failure cut off
    (the turn completes), or, when that prompt died with the killed process
    before reaching the bus, says again the reply the caller was hearing
    when the session failed (counted in ``said_again``)."""
    upto = {m["content"]: i for i, m in enumerate(history or []) if m["role"] == "user"}
    for turn, text in rec.answered_again.items():
        prompt = PROMPTS[turn]
        if history is not None and prompt in upto and text == _expected(history, upto[prompt]):
            rec.replies[turn] = text
            rec.complete += 1
            continue
        row.said_again += 1


def _judge(row: Row, records: list[CallRecord], histories: dict[str, Any]) -> None:
    for rec in records:
        _take_answers_again(row, rec, histories.get(rec.sid))
        row.longest_silence_s = max(row.longest_silence_s, rec.longest_gap_s)
        if rec.complete == len(PROMPTS) and not rec.error:
            row.completed += 1
        else:
            row.notes.append(f"not completed: {rec.sid} heard {rec.replies} error {rec.error!r}")
        row.resumed += rec.resumes
        if rec.error:
            row.errors.append(rec.error)
        history = histories.get(rec.sid)
        answered = [PROMPTS[i] for i, heard in enumerate(rec.replies) if heard]
        if history is None:
            row.lost += len(answered)
            continue
        users = [m["content"] for m in history if m["role"] == "user"]
        for text in answered:
            if users.count(text) == 0:
                row.lost += 1
        for turn, text in enumerate(PROMPTS[: rec.said]):
            unheard = turn >= len(rec.replies) or not rec.replies[turn]
            if unheard and text not in users:
                row.never_published += 1  # said into a socket as the session failed
        for text in PROMPTS[: rec.said]:
            row.doubled += max(0, users.count(text) - 1)
        upto = {m["content"]: i for i, m in enumerate(history) if m["role"] == "user"}
        for turn, heard in enumerate(rec.replies):
            if not heard or PROMPTS[turn] not in upto:
                continue  # cut off by the fault: nothing heard to judge
            if heard == DEFAULT_REPLY_APOLOGY:
                # No reply started in time (the fault held it up): the gateway
                # apologised, and the model later answered this prompt with
                # the next one.
                row.apologised += 1
                continue
            answer = next(
                (
                    i
                    for i in range(upto[PROMPTS[turn]], len(history))
                    if history[i]["role"] != "user"
                ),
                None,
            )
            if answer is None:
                continue
            # What the model was asked: the history before the reply, with
            # the caller's messages since the last reply joined, as requests do.
            expected = _expected(history, answer - 1)
            if heard != expected:
                # Words beyond the one reply: a repeated span (or a doubled reply).
                row.heard_twice += max(0, len(heard.split()) - len(expected.split()))
                row.notes.append(f"heard {heard!r} for {PROMPTS[turn]!r}, expected {expected!r}")


# -- faults ---------------------------------------------------------------


async def _kill(sup: Supervisor, name: str) -> None:
    sup.procs[name].kill9()


async def _pause(pid: int, seconds: float) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        await trio.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


async def _redis_full(redis: RedisServerHandle, seconds: float) -> None:
    admin = RedisClient.from_url(redis.url)
    try:
        await admin.execute("CONFIG", "SET", "maxmemory-policy", "noeviction")
        await admin.execute("CONFIG", "SET", "maxmemory", "1")
        await trio.sleep(seconds)
        await admin.execute("CONFIG", "SET", "maxmemory", "0")
    finally:
        await admin.aclose()


async def _flood(url: str) -> str:
    """One caller reports ``tokensPlayed`` without end (a broken or hostile client)."""
    frame = json.dumps({"type": "info", "name": "tokensPlayed", "value": "word " * 40})
    sent = 0
    try:
        async with open_call(url, auth_token=TOKEN) as call:
            await call.prompt("Tell me a long story.")
            for _ in range(FLOOD_FRAMES):
                await call.send_raw(frame)
                sent += 1
            await call.interrupt(
                utterance_until_interrupt="word word", duration_until_interrupt_ms=500
            )
            await call.prompt("Are you still there?")
            with trio.fail_after(REPLY_PATIENCE_S):
                after = await call.reply()
        return f"{sent} frames of 200 B sent; the flooder's next prompt answered: {after.complete}"
    except (SimulatorError, OSError, trio.TooSlowError) as exc:
        return f"{sent} frames sent; the flooder's session ended: {type(exc).__name__}"


async def _idle_sockets(port: int, public_port: int, hold_s: float) -> str:
    """Open ``IDLE_SOCKETS`` signed relay upgrades to one gateway that never send ``setup``.

    Signed for the public (balancer's) URL, as Twilio signs, but sent to the
    gateway itself: the balancer would spend descriptors of its own.
    """
    relay_url = f"ws://127.0.0.1:{public_port}/relay"
    request = (
        "GET /relay HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{SIGNATURE_HEADER}: {sign(TOKEN, relay_url)}\r\n\r\n"
    ).encode()
    upgraded = 0
    streams: list[trio.SocketStream] = []

    async def one() -> None:
        nonlocal upgraded
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            streams.append(stream)
            await stream.send_all(request)
            with trio.move_on_after(5):
                if (await stream.receive_some(1024)).startswith(b"HTTP/1.1 101"):
                    upgraded += 1
        except OSError:
            pass

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(IDLE_SOCKETS):
                nursery.start_soon(one)
        await trio.sleep(hold_s)
    finally:
        for stream in streams:
            with trio.move_on_after(0.1) as scope:
                scope.shield = True
                await stream.aclose()
    return f"{upgraded} of {IDLE_SOCKETS} upgraded, held {hold_s:.0f} s"


FaultFn = Callable[[Supervisor, RedisServerHandle, str], Awaitable[object]]

FAULTS: dict[str, FaultFn] = {
    "kill -9 gateway": lambda s, r, u: _kill(s, "gateway-1"),
    "kill -9 conversation": lambda s, r, u: _kill(s, "conv-1"),
    "kill -9 llm": lambda s, r, u: _kill(s, "llm-1"),
    "SIGSTOP redis 10 s": lambda s, r, u: _pause(r.pid, 10.0),
    "redis restart": lambda s, r, u: r.restart(),
    "redis maxmemory noeviction 10 s": lambda s, r, u: _redis_full(r, 10.0),
    "worker paused past lease": lambda s, r, u: _pause(
        s.procs["conv-1"].pid, 2.5 * LEASE_TTL_MS / 1000
    ),
    "tokensPlayed flood": lambda s, r, u: _flood(u),
    "2000 idle sockets": lambda s, r, u: _idle_sockets(s.gateway_ports["gateway-1"], s.port, 10.0),
}


async def run_fault(name: str, calls: int) -> Row:
    row = Row(name, calls)
    # As deploy/ runs it: an append-only file, so a restart keeps the data.
    # The balancer in front of the gateways sends each connection to one
    # whose /readyz answers, as a load balancer health-checks its backends.
    async with (
        open_redis_server(extra_args=("--appendonly", "yes")) as redis,
        open_balancer() as balancer,
    ):
        sup = Supervisor(redis.url, balancer.port)
        balancer.backends.extend(("127.0.0.1", p) for p in sup.gateway_ports.values())
        url = balancer.url
        records = [CallRecord() for _ in range(calls)]
        done = 0
        third = trio.Event()

        def progress() -> None:
            nonlocal done
            done += 1
            if done >= calls * len(PROMPTS) // 3:
                third.set()

        async with trio.open_nursery() as outer:
            for role in ROLES:
                outer.start_soon(sup.keep, role)
            with trio.fail_after(60):
                for event in sup.ready.values():
                    await event.wait()
                for conv in ("conv-1", "conv-2"):
                    await sup.procs[conv].wait_for("partition_acquired")
            async with trio.open_nursery() as calls_nursery:
                for rec in records:
                    calls_nursery.start_soon(_converse, url, rec, progress)
                await third.wait()
                started = time.monotonic()
                detail = await FAULTS[name](sup, redis, url)
                row.detail = detail if isinstance(detail, str) else ""
                row.fault_s = round(time.monotonic() - started, 1)
            histories = {r.sid: await _history(redis.url, r.sid) for r in records if r.sid}
            sup.stopping = True
            row.restarts = {k: v for k, v in sup.restarts.items() if v}
            outer.cancel_scope.cancel()
    _judge(row, records, histories)
    row.longest_silence_s = round(row.longest_silence_s, 2)
    return row


def _table(rows: list[Row]) -> str:
    lines = [
        "| fault | calls completed | sessions resumed | caller events lost | applied twice "
        "| words heard twice | longest silence | processes restarted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        restarts = ", ".join(f"{k} {v}" for k, v in r.restarts.items()) or "0"
        lines.append(
            f"| {r.fault} | {r.completed}/{r.calls} | {r.resumed} | {r.lost} | {r.doubled} "
            f"| {r.heard_twice} "
            f"| {r.longest_silence_s:.1f} s | {restarts} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    names = list(FAULTS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise SystemExit(f"unknown fault {unknown[0]!r}; one of: {', '.join(FAULTS)}")
    rows = []
    for name in names:
        row = await run_fault(name, args.calls)
        rows.append(row)
        print(_table([row]).splitlines()[-1], flush=True)
        if row.detail:
            print(f"    {row.detail}", flush=True)
        if row.apologised:
            print(
                f"    {row.apologised} turns heard the gateway's apology (no reply started"
                " within the reply deadline); their prompts were answered with the next one",
                flush=True,
            )
        if row.never_published:
            print(
                f"    {row.never_published} prompts were said into a socket as its session"
                " failed and never reached the bus (no reply, not in history)",
                flush=True,
            )
        if row.said_again:
            print(
                f"    {row.said_again} resumed calls heard again the reply they were hearing"
                " when the session failed",
                flush=True,
            )
        for error in sorted(set(row.errors))[:3]:
            print(f"    call error: {error}", flush=True)
        if args.explain:
            for note in row.notes:
                print(f"    {note}", flush=True)
    print()
    print(_table(rows))
    if args.json:
        await trio.Path(args.json).write_text(
            json.dumps([asdict(r) for r in rows], indent=2) + "\n"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--only", default="", help="comma-separated fault names")
    parser.add_argument("--json", default="")
    parser.add_argument(
        "--explain", action="store_true", help="name each call not completed and each repeat"
    )
    configure_logging(level=os.environ.get("FAULTS_LOG_LEVEL", "error"), fmt="console")
    trio.run(main, parser.parse_args())
