"""What ``POST /action`` answers, decided by ``gateway.twiml.action_twiml`` (pure)."""

from __future__ import annotations

import json

import pytest

from gateway.config import GatewayConfig
from gateway.twiml import action_twiml, connect_twiml
from relay.twiml import LanguageOption, RelayAttributes, parse_twiml

CONFIG = GatewayConfig(
    gateway_id="gw",
    public_url="https://agent.example.com",
    resume_greeting="Where were we?",
    relay=RelayAttributes(
        welcome_greeting="Hello!",
        languages=(LanguageOption("es-ES", tts_provider="Google", voice="es-ES-Neural2-A"),),
        parameters=(("tier", "gold"),),
    ),
)


def _ended(handoff: object) -> dict[str, str]:
    return {"SessionStatus": "ended", "HandoffData": json.dumps(handoff)}


@pytest.mark.parametrize(
    ("params", "outcome", "verbs"),
    [
        (_ended({"reason": "transfer", "number": "+15551234567"}), "dial", ("Dial",)),
        (_ended({"reason": "transfer", "queue": "billing support"}), "enqueue", ("Enqueue",)),
        (_ended({"reason": "transfer", "number": "12345"}), "refused", ("Hangup",)),
        (_ended({"reason": "transfer", "queue": "<Hangup/>"}), "refused", ("Hangup",)),
        (_ended({"reason": "transfer"}), "refused", ("Hangup",)),
        (_ended({"reason": "end_call"}), "hangup", ("Hangup",)),
        (_ended({"reason": "silence"}), "hangup", ("Hangup",)),
        ({"SessionStatus": "ended", "HandoffData": "not json"}, "hangup", ("Hangup",)),
        ({"SessionStatus": "ended"}, "hangup", ("Hangup",)),
        ({"SessionStatus": "completed"}, "hangup", ("Hangup",)),
        ({"SessionStatus": "failed", "ErrorCode": "64105"}, "resume", ("Connect",)),
    ],
)
def test_action_decisions(params: dict[str, str], outcome: str, verbs: tuple[str, ...]) -> None:
    decision = action_twiml(CONFIG, params)
    assert decision.outcome == outcome
    assert parse_twiml(decision.twiml).verbs == verbs


def test_transfer_targets_are_rendered() -> None:
    dial = action_twiml(CONFIG, _ended({"reason": "transfer", "number": "+15551234567"}))
    assert "<Dial>+15551234567</Dial>" in dial.twiml
    queue = action_twiml(CONFIG, _ended({"reason": "transfer", "queue": "support"}))
    assert "<Enqueue>support</Enqueue>" in queue.twiml


def test_resume_is_the_connect_twiml_with_greeting_and_resumed_parameter() -> None:
    fresh = parse_twiml(connect_twiml(CONFIG)).relay
    resumed = parse_twiml(action_twiml(CONFIG, {"SessionStatus": "failed"}).twiml).relay
    assert fresh is not None and resumed is not None
    assert resumed.url == fresh.url and resumed.action == fresh.action
    assert resumed.welcome_greeting == "Where were we?"
    assert dict(resumed.parameters) == {"tier": "gold", "resumed": "true"}
    assert resumed.languages == fresh.languages
    assert dict(resumed.languages[0]) == {
        "code": "es-ES",
        "ttsProvider": "Google",
        "voice": "es-ES-Neural2-A",
    }
    other = {k: v for k, v in resumed.attributes.items() if k != "welcomeGreeting"}
    assert other == {k: v for k, v in fresh.attributes.items() if k != "welcomeGreeting"}


def test_a_handover_is_a_fresh_connect_with_its_session_token() -> None:
    params = {"SessionStatus": "ended", "HandoffData": json.dumps({"reason": "handover"})}
    decision = action_twiml(CONFIG, params, resume_left=False, session_token="tok")
    assert decision.outcome == "handover"  # a drain, not a failure: no resume budget used
    relay = parse_twiml(decision.twiml).relay
    assert relay is not None
    assert relay.welcome_greeting == "Where were we?"
    assert dict(relay.parameters)["resumed"] == "true"
    assert "tok" in dict(relay.parameters).values()
