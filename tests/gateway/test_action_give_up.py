"""/action after a failed session: resume only what may recover, then apologise."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.config import GatewayConfig
from gateway.twiml import action_twiml
from relay.twiml import parse_twiml

CONFIG = GatewayConfig(
    gateway_id="gw",
    public_url="https://agent.example.com",
    resume_apology="Sorry, we have to stop here.",
)


def _failed(code: str | None) -> dict[str, str]:
    params = {"SessionStatus": "failed", "CallStatus": "in-progress"}
    if code is not None:
        params["ErrorCode"] = code
    return params


@pytest.mark.parametrize("code", ["64105", "64114", "39001", None])
def test_a_transient_failure_with_resumes_left_resumes(code: str | None) -> None:
    decision = action_twiml(CONFIG, _failed(code))
    assert decision.outcome == "resume"
    assert parse_twiml(decision.twiml).verbs == ("Connect",)


@pytest.mark.parametrize("code", ["64101", "64102", "64106", "64108"])
def test_a_failure_that_would_repeat_apologises_and_hangs_up(code: str) -> None:
    decision = action_twiml(CONFIG, _failed(code))
    assert decision.outcome == "give_up"
    assert decision.detail == f"error {code} repeats"
    document = parse_twiml(decision.twiml)
    assert document.verbs == ("Say", "Hangup")
    assert "<Say>Sorry, we have to stop here.</Say>" in decision.twiml


def test_no_resumes_left_apologises_even_for_a_transient_failure() -> None:
    decision = action_twiml(CONFIG, _failed("64105"), resume_left=False)
    assert decision.outcome == "give_up"
    assert decision.detail == "resumed 2 times already"
    assert parse_twiml(decision.twiml).verbs == ("Say", "Hangup")


def test_giving_up_goes_to_the_human_handoff_when_there_is_one() -> None:
    to_number = replace(CONFIG, handoff_number="+15551234567")
    decision = action_twiml(to_number, _failed("64106"))
    assert parse_twiml(decision.twiml).verbs == ("Say", "Dial")
    assert "<Dial>+15551234567</Dial>" in decision.twiml
    to_queue = replace(CONFIG, handoff_queue="support")
    assert parse_twiml(action_twiml(to_queue, _failed("64106")).twiml).verbs == ("Say", "Enqueue")
