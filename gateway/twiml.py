"""The gateway's TwiML answers: the voice webhook's and ``POST /action``'s.

Rendering is :mod:`relay.twiml`'s; this module adds what only the gateway
knows (its public URLs, the resume greeting) and the decision of the action
callback. :func:`action_twiml` is that whole decision (pure: form parameters
in, TwiML out), per the handoff contract (:mod:`relay.handoff`):

- ``SessionStatus=ended`` with ``HandoffData`` ``{"reason": "transfer",
  "number": "+1..."}`` -> ``<Dial>``; with ``"queue"`` -> ``<Enqueue>``;
  ``{"reason": "handover"}`` (a draining gateway, :mod:`gateway.drain`) -> a
  fresh ``<Connect><ConversationRelay>`` as for a resume, which the load
  balancer sends to another gateway (not counted against the resumes);
  anything else (``end_call``, ``silence``, no handoff) -> ``<Hangup/>``.
  A transfer target that is not an E.164 number or a plain queue name is
  refused (hang up, logged): handoff data comes from an LLM tool call.
- ``SessionStatus=failed`` (socket dropped, Twilio error) with a transient
  ``ErrorCode`` (``gateway.resume``) and resumes left -> a fresh
  ``<Connect><ConversationRelay>`` like the voice webhook's, with the resume
  greeting and ``<Parameter name="resumed" value="true"/>``; the new session
  has the same callSid, so the conversation continues its history. Any other
  failure, or none left -> ``<Say>`` the resume apology, then ``<Hangup/>``,
  or ``<Dial>``/``<Enqueue>`` the configured human handoff.
- ``completed`` (the caller hung up) or anything unknown -> ``<Hangup/>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from twilio.twiml.voice_response import VoiceResponse

from gateway import calltoken
from gateway.config import GatewayConfig
from gateway.resume import is_transient
from relay.handoff import Handoff, HandoffReason
from relay.twiml import connect_twiml as render_connect
from relay.twiml import dial_twiml, enqueue_twiml, hangup_twiml

# E.164: a plus, a non-zero digit, at most 15 digits in all.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# Twilio queue names are free text up to 64 characters; we accept a safe subset.
_QUEUE = re.compile(r"[A-Za-z0-9_.\- ]{1,64}")
RESUMED_PARAMETER = "resumed"


def connect_twiml(
    config: GatewayConfig, *, resumed: bool = False, session_token: str | None = None
) -> str:
    """TwiML connecting the call to our relay socket, with ``<Connect action>``.

    ``action`` is our public ``/action`` URL, so Twilio reports how each
    session ended (and asks what to do next) there. ``resumed`` renders the
    TwiML of a session that continues a failed one: the resume greeting as
    ``welcomeGreeting`` and ``<Parameter name="resumed" value="true"/>``.
    ``session_token`` (gateway.calltoken) rides along as its ``<Parameter>``.
    """
    attributes = config.relay
    if session_token is not None:
        attributes = replace(
            attributes,
            parameters=(
                *[(k, v) for k, v in attributes.parameters if k != calltoken.PARAMETER],
                (calltoken.PARAMETER, session_token),
            ),
        )
    if resumed:
        attributes = replace(
            attributes,
            welcome_greeting=config.resume_greeting,
            parameters=(
                *[(k, v) for k, v in attributes.parameters if k != RESUMED_PARAMETER],
                (RESUMED_PARAMETER, "true"),
            ),
        )
    return render_connect(attributes, url=config.relay_url, action=config.public("/action"))


@dataclass(frozen=True, slots=True)
class ActionDecision:
    """What ``POST /action`` answers and why (``outcome`` is logged and counted)."""

    twiml: str
    outcome: str  # "dial" | "enqueue" | "hangup" | "resume" | "handover" | "refused" | "give_up"
    detail: str | None = None


def give_up_twiml(config: GatewayConfig) -> str:
    """The apology, then the human handoff if there is one, else hang up."""
    response = VoiceResponse()
    if config.resume_apology:
        response.say(config.resume_apology)
    if config.handoff_number:
        response.dial(config.handoff_number)
    elif config.handoff_queue:
        response.enqueue(config.handoff_queue)
    else:
        response.hangup()
    return str(response.to_xml())


def action_twiml(
    config: GatewayConfig,
    params: dict[str, str],
    *,
    resume_left: bool = True,
    session_token: str | None = None,
) -> ActionDecision:
    """The answer to the ``<Connect action>`` callback with form ``params``.

    ``resume_left``: whether the call may be resumed once more
    (``gateway.resume.claim_resume``, asked only for transient failures).
    ``session_token``: the token of the resumed session (gateway.calltoken).
    """
    status = params.get("SessionStatus", "")
    if status == "failed":
        code = params.get("ErrorCode")
        if not is_transient(code):
            return ActionDecision(give_up_twiml(config), "give_up", f"error {code} repeats")
        if not resume_left:
            detail = f"resumed {config.max_resumes} times already"
            return ActionDecision(give_up_twiml(config), "give_up", detail)
        twiml = connect_twiml(config, resumed=True, session_token=session_token)
        return ActionDecision(twiml, "resume")
    if status != "ended":
        return ActionDecision(hangup_twiml(), "hangup")
    handoff = Handoff.parse(params.get("HandoffData"))
    if handoff is not None and handoff.reason == HandoffReason.HANDOVER:
        twiml = connect_twiml(config, resumed=True, session_token=session_token)
        return ActionDecision(twiml, "handover")
    if handoff is None or handoff.reason != HandoffReason.TRANSFER:
        return ActionDecision(hangup_twiml(), "hangup")
    number, queue = handoff.number, handoff.queue
    if number:
        if _E164.fullmatch(number):
            return ActionDecision(dial_twiml(number), "dial", number)
        return ActionDecision(hangup_twiml(), "refused", f"not an E.164 number: {number!r}")
    if queue:
        if _QUEUE.fullmatch(queue):
            return ActionDecision(enqueue_twiml(queue), "enqueue", queue)
        return ActionDecision(hangup_twiml(), "refused", f"not a queue name: {queue!r}")
    return ActionDecision(hangup_twiml(), "refused", "transfer without number or queue")
