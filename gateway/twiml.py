"""TwiML answers: ``<Connect><ConversationRelay>`` for the voice webhook, and
what ``POST /action`` answers when a relay session is over.

:func:`action_twiml` is the whole decision of the action callback (pure: form
parameters in, TwiML out), per the handoff contract:

- ``SessionStatus=ended`` with ``HandoffData`` ``{"reason": "transfer",
  "number": "+1..."}`` -> ``<Dial>``; with ``"queue"`` -> ``<Enqueue>``;
  anything else (``end_call``, ``silence``, no handoff) -> ``<Hangup/>``.
  A transfer target that is not an E.164 number or a plain queue name is
  refused (hang up, logged): handoff data comes from an LLM tool call.
- ``SessionStatus=failed`` (socket dropped, Twilio error) -> a fresh
  ``<Connect><ConversationRelay>`` like the voice webhook's, with the resume
  greeting and ``<Parameter name="resumed" value="true"/>``; the new session
  has the same callSid, so the conversation continues its history.
- ``completed`` (the caller hung up) or anything unknown -> ``<Hangup/>``.

Rendered with twilio-python's ``VoiceResponse``, which writes the camelCase
attribute names Twilio documents, booleans as ``"true"``/``"false"`` and
escapes attribute values through ``xml.etree``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from twilio.twiml.voice_response import Connect, VoiceResponse

from gateway.config import GatewayConfig, RelayAttributes

# E.164: a plus, a non-zero digit, at most 15 digits in all.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# Twilio queue names are free text up to 64 characters; we accept a safe subset.
_QUEUE = re.compile(r"[A-Za-z0-9_.\- ]{1,64}")
RESUMED_PARAMETER = "resumed"

# RelayAttributes field -> keyword of twilio-python's conversation_relay(), which
# turns snake_case into the camelCase attribute (welcome_greeting -> welcomeGreeting).
_ATTRIBUTES: tuple[str, ...] = (
    "welcome_greeting",
    "welcome_greeting_interruptible",
    "language",
    "tts_language",
    "transcription_language",
    "tts_provider",
    "voice",
    "transcription_provider",
    "speech_model",
    "interruptible",
    "interrupt_sensitivity",
    "dtmf_detection",
    "report_input_during_agent_speech",
    "preemptible",
    "partial_prompts",
    "hints",
    "debug",
    "intelligence_service",
)


def relay_attributes(relay: RelayAttributes) -> dict[str, Any]:
    """The non-``None`` attributes of ``relay`` as conversation_relay() keywords."""
    found: dict[str, Any] = {}
    for name in _ATTRIBUTES:
        value = getattr(relay, name)
        if value is not None:
            found[name] = value
    return found


def connect_twiml(config: GatewayConfig, *, resumed: bool = False) -> str:
    """TwiML connecting the call to our relay socket, with ``<Connect action>``.

    ``action`` is our public ``/action`` URL, so Twilio reports how each
    session ended (and asks what to do next) there. ``resumed`` renders the
    TwiML of a session that continues a failed one: the resume greeting as
    ``welcomeGreeting`` and ``<Parameter name="resumed" value="true"/>``.
    """
    attributes = config.relay
    if resumed:
        attributes = replace(
            attributes,
            welcome_greeting=config.resume_greeting,
            parameters=(
                *[(k, v) for k, v in attributes.parameters if k != RESUMED_PARAMETER],
                (RESUMED_PARAMETER, "true"),
            ),
        )
    response = VoiceResponse()
    connect = Connect(action=config.public("/action"))
    relay = connect.conversation_relay(url=config.relay_url, **relay_attributes(attributes))
    for option in attributes.languages:
        extra = {
            "tts_provider": option.tts_provider,
            "voice": option.voice,
            "transcription_provider": option.transcription_provider,
            "speech_model": option.speech_model,
        }
        relay.language(code=option.code, **{k: v for k, v in extra.items() if v is not None})
    for name, value in attributes.parameters:
        relay.parameter(name=name, value=value)
    response.append(connect)
    return str(response.to_xml())


def hangup_twiml() -> str:
    """TwiML that ends the call."""
    response = VoiceResponse()
    response.hangup()
    return str(response.to_xml())


def dial_twiml(number: str) -> str:
    """TwiML that transfers the call to ``number`` (E.164)."""
    response = VoiceResponse()
    response.dial(number)
    return str(response.to_xml())


def enqueue_twiml(queue: str) -> str:
    """TwiML that puts the caller into the TaskRouter/queue ``queue``."""
    response = VoiceResponse()
    response.enqueue(queue)
    return str(response.to_xml())


@dataclass(frozen=True, slots=True)
class ActionDecision:
    """What ``POST /action`` answers and why (``outcome`` is logged and counted)."""

    twiml: str
    outcome: str  # "dial" | "enqueue" | "hangup" | "resume" | "refused"
    detail: str | None = None


def parse_handoff(data: str | None) -> dict[str, Any] | None:
    """``HandoffData`` as the JSON object we wrote into ``end``; None if it is not one."""
    if not data:
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def action_twiml(config: GatewayConfig, params: dict[str, str]) -> ActionDecision:
    """The answer to the ``<Connect action>`` callback with form ``params``."""
    status = params.get("SessionStatus", "")
    if status == "failed":
        return ActionDecision(connect_twiml(config, resumed=True), "resume")
    if status != "ended":
        return ActionDecision(hangup_twiml(), "hangup")
    handoff = parse_handoff(params.get("HandoffData"))
    if handoff is None or handoff.get("reason") != "transfer":
        return ActionDecision(hangup_twiml(), "hangup")
    number, queue = handoff.get("number"), handoff.get("queue")
    if isinstance(number, str) and number:
        if _E164.fullmatch(number):
            return ActionDecision(dial_twiml(number), "dial", number)
        return ActionDecision(hangup_twiml(), "refused", f"not an E.164 number: {number!r}")
    if isinstance(queue, str) and queue:
        if _QUEUE.fullmatch(queue):
            return ActionDecision(enqueue_twiml(queue), "enqueue", queue)
        return ActionDecision(hangup_twiml(), "refused", f"not a queue name: {queue!r}")
    return ActionDecision(hangup_twiml(), "refused", "transfer without number or queue")
