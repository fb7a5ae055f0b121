"""``make run`` + ``switchboard simulate`` exits 0: app text outside a turn is allowed.

The server is the one ``make run`` starts (the demo agent may hang up and
press keys) with a short silence re-prompt, so the caller hears a re-prompt
before speaking and a tool's goodbye at the end: both are normal
ConversationRelay (the app may send text at any time) and neither is a
problem. With ``strict_turns`` the same text is a violation, and every
problem line names the call's CallSid.
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import trio

from switchboard.testing.procs import open_switchboard

pytestmark = pytest.mark.system

SVG = "{http://www.w3.org/2000/svg}"

SMOKE = Path(__file__).resolve().parents[2] / "bench" / "scenarios" / "smoke.json"
MAKE_RUN = {
    "SWITCHBOARD_TOOLS": "end_call,send_digits",  # the Makefile's run target
    "SWITCHBOARD_WELCOME_GREETING": "Hi.",
    "SWITCHBOARD_SILENCE_REPROMPT_S": "0.2",
    "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "5",
    "SWITCHBOARD_LOG_LEVEL": "info",
}


async def _simulate(url: str, scenario: Path, out: Path) -> tuple[int, str]:
    argv = [sys.executable, "-m", "switchboard.cli", "simulate", "--url", url]
    argv += ["--scenario", str(scenario), "--calls", "2", "--concurrency", "2", "--json", str(out)]
    argv += ["--plot", str(out.with_suffix(".svg"))]
    done = await trio.run_process(
        argv, env={**os.environ, **MAKE_RUN}, capture_stdout=True, capture_stderr=True, check=False
    )
    return done.returncode, done.stdout.decode()


async def test_a_re_prompt_and_a_tools_goodbye_are_not_problems(tmp_path: Path) -> None:
    smoke: dict[str, Any] = json.loads(SMOKE.read_text())
    # Silent at first: the agent re-prompts before the caller's first words.
    quiet = {**smoke, "turns": [{"pause_ms": 1200}, *smoke["turns"]]}
    strict = {**quiet, "strict_turns": True}
    (tmp_path / "quiet.json").write_text(json.dumps(quiet))
    (tmp_path / "strict.json").write_text(json.dumps(strict))
    with trio.fail_after(90):
        async with open_switchboard("dev", "--port", "0", env=MAKE_RUN) as dev:
            url = f"http://127.0.0.1:{dev.port}"
            code, stdout = await _simulate(url, tmp_path / "quiet.json", tmp_path / "quiet.out")
            strict_code, strict_stdout = await _simulate(
                url, tmp_path / "strict.json", tmp_path / "strict.out"
            )
    doc = json.loads((tmp_path / "quiet.out").read_text())
    assert code == 0, stdout
    assert doc["problem_calls"] == [] and doc["violations"] == []
    # The re-prompt and the goodbye were heard, and counted as app text.
    assert doc["counts"]["app_text_frames"] >= 2
    assert doc["counts"]["calls_completed"] == 2

    strict_doc = json.loads((tmp_path / "strict.out").read_text())
    assert strict_code == 1
    sids = {c["call_sid"] for c in strict_doc["problem_calls"]}
    assert len(sids) == 2 and all(s.startswith("CA") for s in sids)
    for line in strict_doc["violations"]:
        assert any(sid in line for sid in sids), line
    assert any(sid in strict_stdout for sid in sids)

    # The pictures: latency of whole turns, calls open over time, problems marked.
    quiet_svg = ET.parse(tmp_path / "quiet.svg").getroot()
    strict_svg = ET.parse(tmp_path / "strict.svg").getroot()
    texts = ["".join(t.itertext()) for t in quiet_svg.iter(f"{SVG}text")]
    assert "calls open" in texts and any("whole turn" in t for t in texts)
    assert not any("problem" in t for t in texts)
    problems = [t for t in ("".join(x.itertext()) for x in strict_svg.iter(f"{SVG}text"))]
    assert any(t.startswith(f"{len(strict_doc['violations'])} problem") for t in problems)
