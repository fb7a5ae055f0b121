"""Helpers for tests and benchmarks; not part of the product (like ``trio.testing``).

- ``procs``: start real ``switchboard`` CLI processes and wait for their events.
- ``redis_server``: a throwaway loopback ``redis-server``.
- ``faults``: ``FaultyBus``, bus fault injection ("may or may not have run").
"""

from switchboard.testing.faults import Fault, FaultyBus

__all__ = ["Fault", "FaultyBus"]
