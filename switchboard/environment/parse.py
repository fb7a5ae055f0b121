"""Typed readers of single environment variables, each naming the variable it rejects.

An unset or empty variable means the default. A value we cannot use raises
``SettingsError`` with one line that names the variable and what it must be.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from switchboard.profile import choice_problem

MAX_PORT = 65535


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def integer(
    env: Mapping[str, str], name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be <= {maximum}, got {value}")
    return value


def port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    return integer(env, name, default, minimum=0, maximum=MAX_PORT)


def url(name: str, value: str, schemes: frozenset[str]) -> str:
    """``value`` if it is a URL with one of ``schemes``, a host and a valid port."""
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        wanted = " or ".join(f"{s}://" for s in sorted(schemes))
        raise SettingsError(f"{name} must start with {wanted}, got {value!r}")
    try:
        _ = parts.port  # ValueError for a port out of range or not a number
    except ValueError:
        raise SettingsError(f"{name} has a bad port (0-{MAX_PORT}): {value!r}") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise SettingsError(f"{name} has no host: {value!r}")
    return value


def number(env: Mapping[str, str], name: str, default: float) -> float:
    """A number >= 0."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must be >= 0, got {value}")
    return value


def positive(env: Mapping[str, str], name: str, default: float) -> float:
    """A number > 0: a duration that zero would turn into "never wait"."""
    value = number(env, name, default)
    if value <= 0:
        raise SettingsError(f"{name} must be > 0, got {value}")
    return value


def flag(env: Mapping[str, str], name: str, default: bool | None) -> bool | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def text(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = env.get(name)
    return default if raw is None or raw == "" else raw


def choice(env: Mapping[str, str], name: str, default: str, choices: set[str]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise SettingsError(f"{name} {choice_problem(value, frozenset(choices))}")
    return value
