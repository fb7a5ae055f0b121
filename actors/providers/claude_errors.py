"""Claude's errors as policy: retriable or not, when to use the fallback model.

``translate_error`` turns an SDK exception into a ``ProviderError`` at the
boundary, ``retriable`` for overload, rate limits, server errors and network
errors; ``retry_after_s`` and ``wants_fallback`` say how the provider
retries within the first-token deadline (``actors/providers/anthropic.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import anthropic

from actors.providers.base import ProviderError

_RETRIABLE_KINDS = frozenset({"overloaded_error", "rate_limit_error", "api_error"})
# Errors that send a request to the fallback model: the primary one is
# rate limited or overloaded, not the request wrong.
_FALLBACK_KINDS = frozenset({"overloaded_error", "rate_limit_error"})
_FALLBACK_STATUSES = frozenset({429, 529})
SPEND_LIMIT_CODE = "enforced_spend_limit_reached"


def prefill_refused(exc: anthropic.AnthropicError) -> bool:
    return isinstance(exc, anthropic.BadRequestError) and "prefill" in str(exc).lower()


def _error_object(exc: anthropic.APIStatusError) -> Mapping[str, object]:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def _error_kind(exc: anthropic.APIStatusError) -> str | None:
    kind = _error_object(exc).get("type")
    return kind if isinstance(kind, str) else None


def _error_code(exc: anthropic.APIStatusError) -> str | None:
    details = _error_object(exc).get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    return code if isinstance(code, str) else None


def retry_after_s(exc: anthropic.AnthropicError) -> float | None:
    """The server's ``retry-after-ms`` / ``retry-after`` (seconds) on an HTTP error."""
    if not isinstance(exc, anthropic.APIStatusError):
        return None
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / scale
        except ValueError:
            continue  # an HTTP date: rare from this API; back off instead
        if math.isfinite(value) and value >= 0:
            return value
    return None


def wants_fallback(exc: anthropic.AnthropicError) -> bool:
    """A 429, 529 or overload: another model may answer where this one cannot."""
    if not isinstance(exc, anthropic.APIStatusError):
        return False
    if _error_code(exc) == SPEND_LIMIT_CODE:
        return False
    return exc.status_code in _FALLBACK_STATUSES or _error_kind(exc) in _FALLBACK_KINDS


def translate_error(exc: anthropic.AnthropicError) -> ProviderError:
    """An SDK exception as a ``ProviderError`` carrying its retry policy."""
    retriable = isinstance(
        exc,
        anthropic.APIConnectionError | anthropic.RateLimitError | anthropic.InternalServerError,
    )
    if isinstance(exc, anthropic.APIStatusError):
        # An error event inside a 200 stream carries its kind only in the body.
        kind = _error_kind(exc)
        retriable = retriable or kind in _RETRIABLE_KINDS
        if _error_code(exc) == SPEND_LIMIT_CODE:
            retriable = False  # the monthly cap: waiting seconds will not help
        message = f"anthropic {exc.status_code} {type(exc).__name__}: {exc.message}"
    else:
        message = f"anthropic {type(exc).__name__}: {exc}"
    return ProviderError(message, retriable=retriable)
