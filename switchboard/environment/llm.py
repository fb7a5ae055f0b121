"""The LLM actor's settings: provider and model, its budgets, fillers and tools."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from actors.config import (
    DEFAULT_FILLER_TEXT,
    DEFAULT_MODEL,
    DEFAULT_REFUSAL_LINE,
    DEFAULT_SYSTEM_PROMPT,
)
from actors.providers.options import parse_effort, parse_thinking
from actors.tools import BUILTIN_TOOLS, entry_point_tool_names, is_reference, load_reference
from switchboard.environment.parse import (
    SettingsError,
    choice,
    flag,
    integer,
    number,
    positive,
    text,
)


class LLMSettings(TypedDict):
    anthropic_configured: bool
    provider: str
    model: str
    max_tokens: int
    first_token_deadline_s: float
    fallback_model: str | None
    thinking: str
    effort: str
    prompt_cache: bool
    anthropic_keepalive_s: float
    filler_after_s: float
    filler_text: str
    refusal_line: str
    scripted_first_token_ms: float
    scripted_token_gap_ms: float
    llm_concurrency: int
    llm_claim_idle_ms: int
    token_coalesce_ms: int
    max_deliveries: int
    system_prompt: str
    tools: tuple[str, ...]
    transfer_number: str | None
    transfer_queue: str | None


def read_tools(env: Mapping[str, str]) -> tuple[str, ...]:
    """SWITCHBOARD_TOOLS: comma-separated tools, each known (built-in or entry point)
    or a ``module:function`` marked ``@tool`` (imported here, to check it once)."""
    names = tuple(n.strip() for n in (env.get("SWITCHBOARD_TOOLS") or "").split(",") if n.strip())
    known = set(BUILTIN_TOOLS) | set(entry_point_tool_names()) if names else set()
    for name in names:
        if is_reference(name):
            try:
                load_reference(name)
            except (LookupError, TypeError) as exc:
                raise SettingsError(f"SWITCHBOARD_TOOLS (or the profile's tools): {exc}") from None
        elif name not in known:
            raise SettingsError(
                f"SWITCHBOARD_TOOLS names an unknown tool {name!r} "
                f"(known: {', '.join(sorted(known))})"
            )
    if "transfer" in names and not (
        env.get("SWITCHBOARD_TRANSFER_NUMBER") or env.get("SWITCHBOARD_TRANSFER_QUEUE")
    ):
        raise SettingsError(
            "SWITCHBOARD_TOOLS enables 'transfer' but neither SWITCHBOARD_TRANSFER_NUMBER "
            "nor SWITCHBOARD_TRANSFER_QUEUE is set"
        )
    return names


def _reasoning(env: Mapping[str, str], max_tokens: int) -> tuple[str, str]:
    """SWITCHBOARD_THINKING and SWITCHBOARD_EFFORT, the budget below the reply's."""
    try:
        thinking = env.get("SWITCHBOARD_THINKING") or "off"
        budget = parse_thinking(thinking).budget_tokens
        effort = parse_effort(env.get("SWITCHBOARD_EFFORT") or "low")
    except ValueError as exc:
        raise SettingsError(f"SWITCHBOARD_THINKING / SWITCHBOARD_EFFORT: {exc}") from None
    if budget >= max_tokens:
        raise SettingsError(
            f"SWITCHBOARD_THINKING budget {budget} must be below "
            f"SWITCHBOARD_MAX_TOKENS {max_tokens}"
        )
    return thinking, effort


def read_llm(env: Mapping[str, str]) -> LLMSettings:
    anthropic_key = bool(env.get("ANTHROPIC_API_KEY"))
    provider = choice(
        env,
        "SWITCHBOARD_LLM_PROVIDER",
        "anthropic" if anthropic_key else "scripted",
        {"anthropic", "scripted"},
    )
    max_tokens = integer(env, "SWITCHBOARD_MAX_TOKENS", 1024, minimum=1)
    first_token_deadline_s = positive(env, "SWITCHBOARD_FIRST_TOKEN_DEADLINE_S", 2.5)
    thinking, effort = _reasoning(env, max_tokens)
    return LLMSettings(
        anthropic_configured=anthropic_key,
        provider=provider,
        model=env.get("SWITCHBOARD_MODEL") or DEFAULT_MODEL,
        max_tokens=max_tokens,
        first_token_deadline_s=first_token_deadline_s,
        fallback_model=text(env, "SWITCHBOARD_FALLBACK_MODEL", None),
        thinking=thinking,
        effort=effort,
        prompt_cache=bool(flag(env, "SWITCHBOARD_PROMPT_CACHE", True)),
        anthropic_keepalive_s=positive(env, "SWITCHBOARD_ANTHROPIC_KEEPALIVE_S", 300.0),
        filler_after_s=number(env, "SWITCHBOARD_FILLER_AFTER_S", 1.2),
        filler_text=env.get("SWITCHBOARD_FILLER_TEXT") or DEFAULT_FILLER_TEXT,
        refusal_line=env.get("SWITCHBOARD_REFUSAL_LINE") or DEFAULT_REFUSAL_LINE,
        scripted_first_token_ms=number(env, "SWITCHBOARD_SCRIPTED_FIRST_TOKEN_MS", 0.0),
        scripted_token_gap_ms=number(env, "SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS", 0.0),
        llm_concurrency=integer(env, "SWITCHBOARD_LLM_CONCURRENCY", 1024, minimum=1),
        llm_claim_idle_ms=integer(env, "SWITCHBOARD_LLM_CLAIM_IDLE_MS", 5000, minimum=100),
        token_coalesce_ms=integer(env, "SWITCHBOARD_TOKEN_COALESCE_MS", 50),
        max_deliveries=integer(env, "SWITCHBOARD_MAX_DELIVERIES", 5, minimum=1),
        system_prompt=env.get("SWITCHBOARD_SYSTEM_PROMPT") or DEFAULT_SYSTEM_PROMPT,
        tools=read_tools(env),
        transfer_number=text(env, "SWITCHBOARD_TRANSFER_NUMBER", None),
        transfer_queue=text(env, "SWITCHBOARD_TRANSFER_QUEUE", None),
    )
