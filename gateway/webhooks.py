"""The HTTP routes' handlers: Twilio's webhooks, health, readiness, metrics.

Every Twilio request is signature-checked first (``X-Twilio-Signature`` over
the public URL Twilio called, :mod:`relay.signature`); a bad signature gets
403 and nothing else happens. ``POST /twiml`` answers the
``<Connect><ConversationRelay>`` TwiML, ``POST /action`` decides what follows
a session (:func:`gateway.twiml.action_twiml`), ``POST /status`` logs call
status callbacks. Every ``<Connect><ConversationRelay>`` answered carries the
session token of its call (:mod:`gateway.calltoken`). The ``/relay`` upgrade
is gated here too (a WebSocket handshake, signed over the relay URL) before
:mod:`gateway.lifecycle` takes the socket.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog

from bus.base import BusError
from bus.retry import HEALTH
from gateway import calltoken
from gateway.context import GatewayContext
from gateway.health import HealthWatch
from gateway.http import Request, Response, text_response, xml_response
from gateway.resume import LocalResumes, claim_resume, is_transient
from gateway.twiml import action_twiml, connect_twiml
from relay import signature

__all__ = ["Webhooks"]

log = structlog.get_logger()


class Webhooks:
    """The handlers of one gateway's HTTP routes."""

    def __init__(self, ctx: GatewayContext, health: HealthWatch) -> None:
        self.ctx = ctx
        self._local_resumes = LocalResumes()
        self.health = health

    def signed(self, request: Request, url: str, params: signature.Params) -> bool:
        """Twilio's signature: the Auth Token's HMAC-SHA1, or a SharedKey's algorithm
        when the request carries ``X-Twilio-Webhooks-Signature-Settings``."""
        config = self.ctx.config
        settings = request.header(signature.SETTINGS_HEADER.lower())
        token = config.auth_token
        if token is None and config.webhook_shared_key is None:
            return True
        secret, algorithm = token, signature.HMAC_SHA1
        if settings:
            secret, algorithm = config.webhook_shared_key, signature.algorithm_of(settings)
        if secret is None:
            log.warning(
                "signature_rejected",
                path=request.path,
                algorithm=algorithm,
                hint="Twilio signed this request with a SharedKey: set TWILIO_WEBHOOK_SHARED_KEY",
            )
            return False
        if request.query:
            url = f"{url}?{request.query}"
        given = request.header("x-twilio-signature")
        ok = signature.verify(secret, url, params, given, algorithm=algorithm)
        if not ok:
            log.warning(
                "signature_rejected",
                path=request.path,
                signed_url=url,
                algorithm=algorithm,
                has_signature=given is not None,
            )
        return ok

    async def _webhook(
        self, request: Request, answer: Callable[[dict[str, str]], Awaitable[Response]]
    ) -> Response:
        pairs = request.form_pairs()
        if not self.signed(request, self.ctx.config.public(request.path), pairs):
            response = text_response(403, "invalid signature")
        else:
            response = await answer(dict(pairs))
        self.ctx.metrics.webhooks.labels(request.path, str(response.status)).inc()
        return response

    async def twiml(self, request: Request) -> Response:
        if self.ctx.draining:
            # Fast, so Twilio moves on at once (the number's fallback URL, or
            # a retry through the load balancer where the URL asks for one).
            self.ctx.metrics.webhooks.labels(request.path, "503").inc()
            log.info("call_refused_draining", path=request.path)
            return text_response(503, "draining")

        async def answer(params: dict[str, str]) -> Response:
            log.info(
                "call_incoming",
                call_sid=params.get("CallSid"),
                from_=params.get("From"),
                to=params.get("To"),
                direction=params.get("Direction"),
            )
            token = self._session_token(params.get("CallSid", ""))
            return xml_response(connect_twiml(self.ctx.config, session_token=token))

        return await self._webhook(request, answer)

    def _session_token(self, call_sid: str, *, supersedes: str = "") -> str:
        """The token binding the session Twilio opens next to ``call_sid``."""
        secret = self.ctx.token_secret
        return calltoken.issue(secret, call_sid, now=time.time(), supersedes=supersedes)

    async def _resume_left(self, params: dict[str, str]) -> bool:
        """Whether a failed session's call may be resumed once more (gateway.resume)."""
        if params.get("SessionStatus") != "failed" or not is_transient(params.get("ErrorCode")):
            return True  # not asked: action_twiml decides without a resume
        call, session = params.get("CallSid", ""), params.get("SessionId", "")
        limit = self.ctx.config.max_resumes
        try:
            number = await claim_resume(self.ctx.bus, self.ctx.keys, call, session, limit)
        except BusError as exc:
            # Without the shared count, resuming is the better failure than
            # hanging up; this gateway's own count still bounds it.
            number = self._local_resumes.claim(call, session, limit)
            log.warning("resume_count_unavailable", call_sid=call, resume=number, error=str(exc))
            return number is not None
        log.info("resume_claimed", call_sid=call, resume=number, limit=limit)
        return number is not None

    async def action(self, request: Request) -> Response:
        async def answer(params: dict[str, str]) -> Response:
            log.info(
                "relay_session_ended",
                call_sid=params.get("CallSid"),
                session_id=params.get("SessionId"),
                session_status=params.get("SessionStatus"),
                session_duration=params.get("SessionDuration"),
                handoff_data=params.get("HandoffData"),
                error_code=params.get("ErrorCode"),
                error_message=params.get("ErrorMessage"),
            )
            resume_left = await self._resume_left(params)
            token = self._session_token(
                params.get("CallSid", ""), supersedes=params.get("SessionId", "")
            )
            decision = action_twiml(
                self.ctx.config, params, resume_left=resume_left, session_token=token
            )
            log.info(
                "action_answered",
                call_sid=params.get("CallSid"),
                outcome=decision.outcome,
                detail=decision.detail,
            )
            if decision.outcome == "refused":
                log.warning(
                    "handoff_refused", call_sid=params.get("CallSid"), detail=decision.detail
                )
            return xml_response(decision.twiml)

        return await self._webhook(request, answer)

    async def status(self, request: Request) -> Response:
        async def answer(params: dict[str, str]) -> Response:
            log.info(
                "call_status",
                call_sid=params.get("CallSid"),
                call_status=params.get("CallStatus"),
                call_duration=params.get("CallDuration"),
            )
            return Response(204)

        return await self._webhook(request, answer)

    async def healthz(self, request: Request) -> Response:
        return text_response(200, "ok")

    async def readyz(self, request: Request) -> Response:
        if self.ctx.draining:
            return text_response(503, "draining")
        if not self.ctx.ready:
            return text_response(503, "starting")
        if HEALTH.degraded:
            # Calls in progress ride the outage out; a balancer should send
            # new ones to a gateway whose bus works.
            return text_response(503, "bus degraded")
        return text_response(200, "ready")

    async def metrics(self, request: Request) -> Response:
        metrics = self.ctx.metrics
        metrics.active_calls.set(len(self.ctx.sessions))
        metrics.facts_dropped.set(self.ctx.facts.dropped)
        await self.health.sample()
        return Response(200, metrics.render(), content_type=metrics.content_type)

    async def relay_gate(self, request: Request) -> Response | None:
        """Admit a ``/relay`` upgrade (None) or refuse it with a response."""
        if request.header("sec-websocket-key") is None:
            return text_response(400, "not a websocket handshake")
        if self.ctx.draining:
            self.ctx.metrics.webhooks.labels(request.path, "503").inc()
            log.info("call_refused_draining", path=request.path)
            return text_response(503, "draining")
        if not self.signed(request, self.ctx.config.relay_url, {}):
            self.ctx.metrics.webhooks.labels(request.path, "403").inc()
            return text_response(403, "invalid signature")
        if self.ctx.open_sockets >= self.ctx.config.max_sockets:
            self.ctx.metrics.webhooks.labels(request.path, "503").inc()
            log.warning("relay_sockets_at_limit", limit=self.ctx.config.max_sockets)
            return Response(503, b"busy", headers=(("Retry-After", "1"),))
        return None
