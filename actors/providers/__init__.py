"""LLM providers behind one small interface (``base.Provider``).

``scripted`` is offline and deterministic (demo, tests, no API key);
``anthropic`` streams from Claude through the official SDK. ``make_provider``
picks one from an ``LLMConfig``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.config import LLMConfig
from actors.providers.base import (
    Completion,
    CompletionRequest,
    Provider,
    ProviderError,
    ToolUse,
    Usage,
)
from actors.providers.scripted import ScriptedProvider

if TYPE_CHECKING:
    from actors.providers.anthropic import AnthropicProvider


def __getattr__(name: str) -> Any:
    # The Anthropic provider imports the SDK (seconds of CPU): only on use, so
    # importing this package for the scripted provider or the options stays cheap.
    if name == "AnthropicProvider":
        from actors.providers.anthropic import AnthropicProvider

        return AnthropicProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_provider(config: LLMConfig) -> Provider:
    """The provider named by ``config.provider`` (``"anthropic"`` or ``"scripted"``)."""
    if config.provider == "anthropic":
        from actors.providers.anthropic import AnthropicProvider

        return AnthropicProvider(
            config.model,
            config.max_tokens,
            first_token_deadline_s=config.first_token_deadline_s,
            fallback_model=config.fallback_model,
            thinking=config.thinking,
            effort=config.effort,
            prompt_cache=config.prompt_cache,
            keepalive_s=config.keepalive_s,
        )
    if config.provider == "scripted":
        return ScriptedProvider(
            first_token_ms=config.scripted_first_token_ms,
            token_gap_ms=config.scripted_token_gap_ms,
        )
    raise ValueError(
        f"unknown LLM provider {config.provider!r} (expected 'anthropic' or 'scripted')"
    )


__all__ = [
    "AnthropicProvider",
    "Completion",
    "CompletionRequest",
    "Provider",
    "ProviderError",
    "ScriptedProvider",
    "ToolUse",
    "Usage",
    "make_provider",
]
