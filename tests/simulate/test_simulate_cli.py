"""``switchboard simulate`` as a real process against a real ``switchboard dev``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio

from switchboard.testing.procs import HANG_GUARD_S, open_switchboard

SMOKE = Path(__file__).resolve().parents[2] / "bench" / "scenarios" / "smoke.json"

pytestmark = pytest.mark.system


async def test_simulate_cli_against_dev(tmp_path: Path) -> None:
    env = {
        "TWILIO_AUTH_TOKEN": "cli-token",
        "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS": "5",
        "SWITCHBOARD_LOG_LEVEL": "info",
    }
    out_json, out_svg = tmp_path / "run.json", tmp_path / "run.svg"
    async with open_switchboard("dev", "--port", "0", env=env) as dev:
        ready = await dev.wait_for("switchboard_ready")
        argv = [sys.executable, "-m", "switchboard.cli", "simulate", "--url", ready["url"]]
        argv += ["--scenario", str(SMOKE), "--calls", "4", "--concurrency", "2"]
        argv += ["--json", str(out_json), "--plot", str(out_svg), "--seed", "3"]
        with trio.fail_after(HANG_GUARD_S):
            done = await trio.run_process(
                argv,
                env={**os.environ, **env},
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"prompt -> first token" in done.stdout
    doc = json.loads(out_json.read_text())
    counts = doc["counts"]
    assert doc["config"]["signed"] is True
    assert counts["calls_completed"] == 4 and counts["prompts_sent"] == 16
    assert counts["interrupted"] == 4 and counts["dtmf_sent"] == 12
    problems = ("protocol_violations", "missing_last", "lost_tokens", "misordered_tokens",
                "fenced_leaks", "stray_frames", "calls_failed")  # fmt: skip
    assert {k: counts[k] for k in problems} == dict.fromkeys(problems, 0)
    ET.parse(out_svg)


async def test_simulate_cli_rejects_a_bad_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"turns": [{"say": "hi", "dtmf": "1"}]}')
    done = await trio.run_process(
        [sys.executable, "-m", "switchboard.cli", "simulate", "--scenario", str(bad)],
        capture_stderr=True,
        check=False,
        stdout=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert b"turns[0] needs exactly one of say, dtmf, pause_ms" in done.stderr
