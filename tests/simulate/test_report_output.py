"""Statistics, the reply checker and the report formats (JSON schema, SVG)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from switchboard.checks import check_scripted_reply
from switchboard.simulate import write_json, write_svg
from switchboard.twilio import report
from switchboard.twilio.results import CallResult, SimulationConfig, SimulationResult, TurnResult
from switchboard.twilio.scenario import Say, Scenario


def test_percentiles_interpolate_between_ranks() -> None:
    assert report.percentile([1, 2, 3, 4], 50) == 2.5
    assert report.percentile([5], 99) == 5
    assert report.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert report.percentile([3, 1, 2], 0) == 1 and report.percentile([3, 1, 2], 100) == 3
    with pytest.raises(ValueError):
        report.percentile([], 50)
    with pytest.raises(ValueError):
        report.percentile([1], 101)


def test_summarize_and_histogram() -> None:
    s = report.summarize([float(v) for v in range(1, 11)])
    assert (s.n, s.min, s.max, s.mean, s.p50) == (10, 1, 10, 5.5, 5.5)
    assert report.summarize([]).to_json() == {
        "n": 0, "min": None, "mean": None, "p50": None, "p95": None, "p99": None, "max": None,
    }  # fmt: skip
    buckets = report.histogram([0.0, 1.0, 2.0, 10.0], bins=5)
    assert len(buckets) == 5 and sum(c for _, _, c in buckets) == 4
    assert buckets[0] == (0.0, 2.0, 2) and buckets[-1][2] == 1
    assert report.histogram([3.0, 3.0]) == [(3.0, 3.0, 2)]


REPLY = "You said: Book a table. That was message 2 from you."


@pytest.mark.parametrize(
    ("reply", "complete", "fault"),
    [
        (REPLY, True, None),
        # Joined with an earlier unanswered prompt: still this prompt's reply.
        ("You said: hi Book a table. That was message 2 from you.", True, None),
        ("You said: Book table. That was message 2 from you.", True, "lost"),
        ("You said: table a Book. That was message 2 from you.", True, "misordered"),
        ("Hello there You said: Book a table. That was message 2 from you.", True, "fenced"),
        ("You said: book a", False, None),
        ("You", False, None),
        ("stale words You said: book", False, "fenced"),
        # A late reply: the filler line first belongs to this turn's reply.
        (f"One moment. {REPLY}", True, None),
        ("One moment. You said: Book", False, None),
        ("One mom", False, None),
        # ... but only before it: inside the reply it is a fault.
        ("You One moment. said: Book a table. That was message 2 from you.", True, "lost"),
        ("One moment. Hello You said: Book a table. That was message 2 from you.", True, "fenced"),
    ],
)
def test_scripted_reply_checker(reply: str, complete: bool, fault: str | None) -> None:
    assert check_scripted_reply("Book a table.", reply, complete=complete) == fault


def _result() -> SimulationResult:
    scenario = Scenario(turns=(Say("Book a table."),), name="unit")
    result = SimulationResult(
        config=SimulationConfig(url="http://x", calls=2, provider_ttft_ms=100), scenario=scenario
    )
    ok = TurnResult(call=0, index=0, prompt="Book a table.", sent_at=10.0)
    ok.first_at, ok.last_at, ok.frames = 10.104, 10.2, ["You said: Book a table. ", "That was "]
    bad = TurnResult(call=1, index=0, prompt="Book a table.", sent_at=10.5, fault="lost")
    bad.first_at, bad.frames = 10.62, ["You"]
    result.calls = [
        CallResult(index=0, turns=[ok], session_status="completed"),
        CallResult(index=1, turns=[bad], error="reply_timeout: no last:true within 30 s"),
    ]
    result.started_at, result.duration_s = 10.0, 31.0
    return result


def test_json_document_schema(tmp_path: Path) -> None:
    result = _result()
    path = tmp_path / "out.json"
    write_json(path, result.to_json())
    doc = json.loads(path.read_text())
    assert doc["schema"] == report.SCHEMA
    assert set(doc) == {"schema", "label", "config", "counts", "latency_ms", "errors",
                        "violations", "problem_calls", "samples"}  # fmt: skip
    assert set(doc["latency_ms"]) == {"first_token", "turn", "overhead"}
    for stats in doc["latency_ms"].values():
        assert set(stats) == {"n", "min", "mean", "p50", "p95", "p99", "max"}
    assert doc["latency_ms"]["first_token"]["n"] == 2
    assert doc["latency_ms"]["turn"] == report.summarize([200.0]).to_json()
    assert doc["latency_ms"]["overhead"]["min"] == pytest.approx(4.0)
    assert doc["counts"]["calls_failed"] == 1 and doc["counts"]["missing_last"] == 1
    assert doc["counts"]["lost_tokens"] == 1
    assert doc["errors"] == {"reply_timeout": 1}
    assert doc["samples"] == [[0.0, 104.0, 200.0], [0.5, 120.0, None]]
    assert result.problems == 3
    table = report.render_table(doc)
    assert "prompt -> last:true" in table and "reply_timeout=1" in table


def test_svg_is_well_formed(tmp_path: Path) -> None:
    path = tmp_path / "plot.svg"
    write_svg(path, _result().svg())
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    # Two first-token points and the one whole turn that ended.
    assert len(root.findall(".//{http://www.w3.org/2000/svg}circle")) == 3
    # Empty runs and awkward titles still give valid XML.
    ET.fromstring(report.render_svg([], title="<none> & nothing"))
    with pytest.raises(ValueError, match="SVG"):
        write_svg(tmp_path / "plot.png", "<svg/>")


def test_peak_open_calls_counts_overlapping_sockets_only() -> None:
    result = SimulationResult(
        config=SimulationConfig(url="http://x", calls=4),
        scenario=Scenario(turns=(Say("Hello."),), name="unit"),
    )
    spans = [(0.0, 10.0), (1.0, 5.0), (5.0, 6.0), (2.0, None)]  # last: never closed
    result.calls = [CallResult(index=i, opened_at=a, closed_at=b) for i, (a, b) in enumerate(spans)]
    # At 2-5 s three are open; the call opening at 5.0 replaces the one closing then.
    assert result.peak_open_calls() == 3
    result.calls.append(CallResult(index=4))  # never connected: not open at all
    assert result.counts()["peak_open_calls"] == 3


def test_a_reply_still_streaming_is_not_counted_missing_until_its_call_ends() -> None:
    result = _result()
    streaming = TurnResult(call=2, index=0, prompt="Book a table.", sent_at=11.0)
    streaming.first_at, streaming.frames = 11.1, ["You said: "]
    live = CallResult(index=2, turns=[streaming], opened_at=10.9)
    result.calls.append(live)
    assert result.counts()["missing_last"] == 1  # only the failed call's
    live.closed_at = 40.0  # hung up without the reply's last: now it is a problem
    assert result.counts()["missing_last"] == 2
