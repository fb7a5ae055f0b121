"""Operator tools: look at calls on a running deployment's bus.

- ``recording``: read one call back from every stream (``load_call``).
- ``timeline``: a recorded call as text or JSON.
- ``rerun``: re-drive a recorded call through today's conversation actor.
- ``replay``: ``switchboard replay CALLSID`` (print, ``--rerun``, ``--export``).
- ``tail``: ``switchboard tail``, live entries of every stream, filtered.

Everything goes through the ``Bus`` protocol, so it works on Redis from the
CLI and on a ``MemoryBus`` in tests.
"""
