"""``switchboard replay CALLSID``: rebuild one call from the streams.

Three things can be done with a recording (``switchboard.ops.recording``):

- print it (``switchboard.ops.timeline``): every entry with its time relative
  to the first one (wall clock: envelope ``ts`` or a fact's ``t_ms``) and the
  turn it belongs to, as text or JSON;
- ``--rerun`` it through today's conversation actor and compare
  (``switchboard.ops.rerun``);
- ``--export`` the caller's side as a scenario (``export_scenario``, in the
  format ``switchboard.twilio.scenario`` reads) that the simulator can play back.

A call that is not on the streams (never seen, or older than the retention)
raises ``CallNotFound``; the CLI prints its message and exits 1.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from typing import TextIO

from actors.config import ConversationConfig
from bus.envelope import Kind
from bus.keys import Keys
from switchboard.ops.recording import CallNotFound, CallRecording, StreamReader, load_call
from switchboard.ops.rerun import format_rerun, rerun
from switchboard.ops.timeline import format_timeline, timeline_json
from switchboard.outfile import is_stdout
from switchboard.twilio.scenario import Dtmf, Say, Scenario, Turn, scenario_to_data


def export_scenario(rec: CallRecording) -> Scenario:
    """The caller's side of ``rec`` as a scenario (``switchboard.twilio.scenario``).

    Each final prompt becomes a ``say`` turn whose ``think_ms`` is the recorded
    pause since the caller's previous move or the agent's previous reply; each
    key press a ``dtmf`` turn; an interrupt becomes ``interrupt_after`` (the
    token entries of the reply the caller had received) on the ``say`` it cut.
    """
    tokens = [i.env for i in rec.of_kind(Kind.LLM_TOKENS, source="gateway")]
    turns: list[Turn] = []
    lang = "en-US"
    last_ts: int | None = None
    last_say: tuple[int, Say, int] | None = None  # where in turns, the say, its prompt's seq
    for item in rec.partition_entries():
        env, b = item.env, item.env.body
        if env.kind == Kind.CALL_PROMPT and b.get("last", True):
            text = str(b.get("voicePrompt", "")).strip()
            if not text:
                continue
            lang = str(b.get("lang") or lang)
            think = max(0, env.ts - last_ts) if last_ts is not None else 0
            say = Say(text, speech_ms=0.0, think_ms=float(think))
            last_say = (len(turns), say, env.seq)
            turns.append(say)
        elif env.kind == Kind.CALL_DTMF and b.get("digit"):
            turns.append(Dtmf(str(b["digit"])))
        elif env.kind == Kind.CALL_INTERRUPT and last_say is not None:
            at, say, seq = last_say
            heard = [t for t in tokens if t.body.get("reply_to") == seq and t.ts <= env.ts]
            turns[at] = replace(say, interrupt_after=max(1, len(heard)))
            last_say = None
        elif env.kind not in (Kind.LLM_RESULT, Kind.CALL_SETUP):
            continue
        last_ts = env.ts
    return Scenario(turns=tuple(turns), name=f"replay-{rec.call}", lang=lang)


# ------------------------------------------------------------------------------ CLI


async def run_replay(
    bus: StreamReader,
    keys: Keys,
    call: str,
    *,
    as_json: bool = False,
    rerun_config: ConversationConfig | None = None,
    export_path: str | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """What ``switchboard replay`` does on ``bus``; returns the exit code."""
    try:
        rec = await load_call(bus, keys, call)
    except CallNotFound as exc:
        err.write(f"switchboard replay: {exc}\n")
        return 1
    if export_path is not None:
        exported = scenario_to_data(export_scenario(rec))
        scenario = json.dumps(exported, indent=2, ensure_ascii=False) + "\n"
        if is_stdout(export_path):
            out.write(scenario)  # the scenario is the whole output
            return 0
        with open(export_path, "w", encoding="utf-8") as f:  # noqa: ASYNC230 (one small file)
            f.write(scenario)
        err.write(f"scenario written to {export_path}\n")
    if rerun_config is not None:
        report = await rerun(rec, rerun_config)
        if as_json:
            data = [
                {"name": c.name, "then": c.then, "now": c.now, "differs": c.differs}
                for c in report.comparisons
            ]
            out.write(json.dumps({"call": call, "comparisons": data}, ensure_ascii=False) + "\n")
        else:
            out.write(format_rerun(report) + "\n")
        return 1 if report.differences else 0
    if as_json:
        out.write(json.dumps(timeline_json(rec), ensure_ascii=False) + "\n")
    else:
        out.write(format_timeline(rec) + "\n")
    return 0
