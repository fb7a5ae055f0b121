"""Plug-in actors: found through the ``switchboard.actors`` entry-point group.

A plug-in is any installed distribution that declares, in its pyproject.toml::

    [project.entry-points."switchboard.actors"]
    analytics = "switchboard_analytics:make_actor"

The object named is a *factory*: a callable taking a ``PluginContext`` and
returning an ``Actor`` (an ``Actor`` subclass whose constructor takes the
context works too). ``switchboard actor NAME`` loads it and serves it like a
built-in actor. A plug-in reads through its own consumer group, so adding or
removing one changes nothing for the other actors. docs/WRITING-ACTORS.md
walks through a complete one (``examples/analytics``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from prometheus_client import CollectorRegistry

from actors.runtime import Actor
from bus.keys import Keys

ENTRY_POINT_GROUP = "switchboard.actors"


class PluginError(Exception):
    """A plug-in is not installed, fails to load, or does not make an ``Actor``."""


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What the composition root hands a plug-in factory.

    ``keys`` names every stream of the deployment (the plug-in's own streams
    go under ``keys.namespace`` too); ``worker_id`` is this process's consumer
    name; ``registry`` is this process's Prometheus registry, served on
    ``/metrics`` when ``SWITCHBOARD_METRICS_PORT`` is set; ``retention_ms`` is
    how long streams keep entries (trim your own the same way).
    """

    keys: Keys
    worker_id: str
    retention_ms: int
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)


ActorFactory = Callable[[PluginContext], Actor]


def available() -> dict[str, EntryPoint]:
    """Installed plug-ins by name (the entry point's name)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load(name: str, context: PluginContext) -> Actor:
    """Build the plug-in actor ``name``; ``PluginError`` when that is not possible."""
    found = available().get(name)
    if found is None:
        raise PluginError(f"no actor plug-in named {name!r} is installed")
    try:
        factory = found.load()
    except Exception as exc:  # any import failure of third-party code
        raise PluginError(f"plug-in {name!r} ({found.value}) failed to load: {exc!r}") from exc
    if not callable(factory):
        raise PluginError(f"plug-in {name!r} ({found.value}) is not callable")
    actor = factory(context)
    if not isinstance(actor, Actor):
        raise PluginError(
            f"plug-in {name!r} ({found.value}) returned {type(actor).__name__}, not an Actor"
        )
    return actor
