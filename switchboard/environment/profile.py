"""An agent profile (SWITCHBOARD_PROFILE) laid under the environment.

The profile's values stand in for the environment variables of the same
settings; a variable that is set (non-empty) overrides the profile's value.
"""

from __future__ import annotations

from collections.abc import Mapping

from actors.tools import entry_point_tool_names
from switchboard.environment.parse import SettingsError
from switchboard.profile import Profile, ProfileError, load_profile


def profile_env(profile: Profile) -> dict[str, str]:
    """A profile's values under the environment variables they stand in for."""
    out: dict[str, str] = {}

    def put(name: str, value: object) -> None:
        if value is None:
            return
        out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)

    put("SWITCHBOARD_SYSTEM_PROMPT", profile.system_prompt)
    put("SWITCHBOARD_WELCOME_GREETING", profile.greeting)
    put("SWITCHBOARD_RESUME_GREETING", profile.resume_greeting)
    put("SWITCHBOARD_MODEL", profile.model)
    put("SWITCHBOARD_MAX_TOKENS", profile.max_tokens)
    put("SWITCHBOARD_PREEMPTIVE", profile.preemptive)
    for key, value in profile.voice.items():
        # [voice] keys are the relay settings' names: voice.tts_provider is
        # SWITCHBOARD_TTS_PROVIDER, and so on.
        put(f"SWITCHBOARD_{key.upper()}", value)
    if profile.tools is not None:
        out["SWITCHBOARD_TOOLS"] = ",".join(profile.tools)
    put("SWITCHBOARD_TRANSFER_NUMBER", profile.transfer_number)
    put("SWITCHBOARD_TRANSFER_QUEUE", profile.transfer_queue)
    put("SWITCHBOARD_SILENCE_REPROMPT_S", profile.silence_reprompt_s)
    put("SWITCHBOARD_SILENCE_MAX_REPROMPTS", profile.silence_max_reprompts)
    put("SWITCHBOARD_DTMF_IDLE_S", profile.dtmf_idle_s)
    return out


def with_profile(env: Mapping[str, str]) -> tuple[Mapping[str, str], Profile, str | None]:
    """``env`` over the profile SWITCHBOARD_PROFILE names (loaded and checked),
    that profile, and its path; with no profile, ``env`` and an empty one."""
    path = env.get("SWITCHBOARD_PROFILE") or None
    if path is None:
        return env, Profile(), None
    try:
        profile = load_profile(path, tools=tuple(entry_point_tool_names()))
    except ProfileError as exc:
        raise SettingsError(f"SWITCHBOARD_PROFILE: {exc}") from None
    return {**profile_env(profile), **{k: v for k, v in env.items() if v != ""}}, profile, path
