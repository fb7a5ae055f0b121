"""The message bus: the only package that knows Redis.

Layers, bottom up:

- ``resp``: a small Trio-native Redis client on ``hiredis`` (one request in
  flight per connection, poison-on-interruption).
- ``base``: the ``Bus`` protocol, ``Entry``, and the error tree.
- ``memory`` / ``redis``: the two implementations with the same semantics,
  checked by one conformance suite (``tests/bus``).
- ``keys`` and ``envelope``: the stream names and the message envelope that
  gateway and actors share (they never import each other).
- ``messages``: one typed message per kind, the body of each envelope.
"""

from bus.base import Bus, BusError, ConnectionLost, Entry, Lease
from bus.envelope import Envelope, Kind

__all__ = ["Bus", "BusError", "ConnectionLost", "Entry", "Envelope", "Kind", "Lease"]
