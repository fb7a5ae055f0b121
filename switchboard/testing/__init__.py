"""Helpers for tests and benchmarks; not part of the product (like ``trio.testing``).

- ``procs``: start real ``switchboard`` CLI processes and wait for their events.
- ``redis_server``: a throwaway loopback ``redis-server`` (plain, or TLS-only
  with an ACL user).
- ``redis_cluster``: a throwaway Redis Cluster of masters and replicas.
- ``tls``: a throwaway CA with server and client certificates (``openssl``).
- ``states``: wait until the conversation's persisted call states hold
  the answers a test expects (``settled_states``).
- ``requests``: a request's full message list, rebuilt from the bus.
- ``faults``: ``FaultyBus``, bus fault injection ("may or may not have run",
  or a call held until released: ``Stall``).
"""

from switchboard.testing.faults import Fault, FaultyBus, Stall

__all__ = ["Fault", "FaultyBus", "Stall"]
