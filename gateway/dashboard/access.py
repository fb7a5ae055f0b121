"""Who may use the dashboard and the operator API, and the JSON they answer with.

With ``SWITCHBOARD_DASHBOARD_TOKEN`` set, every route needs it, as
``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (a browser's WebSocket
cannot set headers); a wrong or missing token gets 401. Without a token the
routes are open on ``switchboard dev`` and on a gateway that checks no Twilio
signatures (anyone can open calls there anyway), and absent (404) on a
signed, production gateway.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs

import orjson
import structlog

from gateway.http import Request, Response, text_response

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class DashboardAccess:
    """Who may use the dashboard: see the module docstring."""

    token: str | None = None
    open_without_token: bool = False

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.open_without_token

    def refuse(self, request: Request) -> Response | None:
        """None when ``request`` may proceed, else the answer (404 off, 401 bad token)."""
        if not self.enabled:
            return text_response(404, "not found")
        if self.token is None:
            return None
        given = _bearer(request) or query(request).get("token", "")
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        log.warning("dashboard_refused", path=request.path, had_token=bool(given))
        return Response(
            401,
            b"dashboard token required: Authorization: Bearer TOKEN or ?token=TOKEN "
            b"(SWITCHBOARD_DASHBOARD_TOKEN)",
            headers=(("WWW-Authenticate", 'Bearer realm="switchboard"'),),
        )


def _bearer(request: Request) -> str:
    value = request.header("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def query(request: Request) -> dict[str, str]:
    """The request's query parameters (the last value of a repeated one)."""
    return {k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()}


def query_int(request: Request, name: str, default: int) -> int:
    value = query(request).get(name)
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def dumps(data: object) -> str:
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode()


def json_response(data: object, status: int = 200) -> Response:
    return Response(
        status,
        orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        content_type="application/json",
        headers=(("Cache-Control", "no-store"),),
    )
