"""Telemetry of preemptive replies (actors/telemetry_speculation.py), on synthetic facts.

An adopted speculation's LLM facts carry the interim prompt's seq, the rest
of its turn the final prompt's; they make one turn, in whichever order they
come. A discarded speculation makes no turn, but what it cost is counted.
"""

from __future__ import annotations

from typing import Any

from actors.telemetry import TelemetryActor, TelemetryConfig
from bus.facts import fact_envelope
from bus.messages import Fact

CTX = {"call": "CA1", "session": "VX1"}


def _feed(actor: TelemetryActor, name: str, t_ms: float, **fields: Any) -> None:
    env = fact_envelope(name, t_ms=t_ms, turn=1, **CTX, **fields)
    actor.apply(env, Fact.from_body(env.body))


def _sample(actor: TelemetryActor, name: str, **labels: str) -> float:
    return actor.registry.get_sample_value(name, labels) or 0.0


def test_an_adopted_speculation_and_its_final_prompt_make_one_complete_turn() -> None:
    actor = TelemetryActor(TelemetryConfig())
    _feed(actor, "call_started", 0.0)
    # Started on the interim prompt seq 5; its first token came before the final.
    _feed(actor, "speculation_started", 100.0, reply_to=5, chars=20)
    _feed(actor, "request_taken", 101.0, reply_to=5)
    _feed(actor, "provider_first_token", 700.0, reply_to=5)
    _feed(actor, "prompt_received", 650.0, reply_to=7)
    _feed(actor, "speculation_adopted", 652.0, reply_to=7, speculation=5)
    _feed(actor, "prompt_applied", 652.0, reply_to=7)
    _feed(actor, "first_token_sent", 703.0, reply_to=7, latency_ms=53.0)
    usage = {"input_tokens": 40, "output_tokens": 12}
    _feed(actor, "completion_done", 900.0, reply_to=5, usage=usage, held=True)
    _feed(actor, "last_token_sent", 901.0, reply_to=7)
    _feed(actor, "call_ended", 2000.0, code=1000)
    (summary,) = actor.summaries
    (turn,) = summary.turns.values()
    assert (turn.reply_to, turn.complete) == (7, True)
    assert turn.first_token_seconds() == 0.053
    assert turn.usage is not None and turn.usage.output_tokens == 12
    fields = summary.fields()
    assert (fields["speculations"], fields["speculations_adopted"]) == (1, 1)
    assert fields["speculations_discarded"] == 0
    assert _sample(actor, "switchboard_speculations_total", outcome="adopted") == 1
    assert _sample(actor, "switchboard_turns_total", complete="true") == 1


def test_a_discarded_speculation_makes_no_turn_but_its_tokens_count() -> None:
    actor = TelemetryActor(TelemetryConfig())
    _feed(actor, "call_started", 0.0)
    _feed(actor, "speculation_started", 100.0, reply_to=3, chars=9)
    _feed(actor, "request_taken", 101.0, reply_to=3)
    _feed(actor, "prompt_received", 600.0, reply_to=4)
    _feed(actor, "speculation_discarded", 602.0, reply_to=3, reason="mismatch")
    usage = {"input_tokens": 30, "output_tokens": 4}
    _feed(actor, "completion_done", 640.0, reply_to=3, usage=usage, held=True, cancelled=True)
    _feed(actor, "speculation_wasted", 641.0, reply_to=3, output_tokens=4, input_tokens=30)
    _feed(actor, "prompt_applied", 602.0, reply_to=4)
    _feed(actor, "call_ended", 2000.0, code=1000)
    (summary,) = actor.summaries
    assert [t.reply_to for t in summary.turns.values()] == [4]
    fields = summary.fields()
    assert (fields["speculations"], fields["speculations_discarded"]) == (1, 1)
    assert fields["speculation_wasted_output_tokens"] == 4
    assert _sample(actor, "switchboard_speculations_total", outcome="discarded") == 1
    assert _sample(actor, "switchboard_speculation_wasted_tokens_total", direction="output") == 4
    assert _sample(actor, "switchboard_llm_tokens_total", direction="output") == 4
