"""Behaviour: the actors that turn caller events into replies.

Layers, bottom up:

- ``providers``: the LLM seam (``Provider``) with ``scripted`` (offline) and
  ``anthropic`` implementations; knows nothing of the bus.
- ``runtime``: ``Actor`` and ``serve_actor``: consumer-group loops, ack after
  handling, retries, dead letters, log context. Knows the bus, not behaviour.
- ``conversation`` and ``llm``: the built-in actors, each one ``Actor``
  subclass built from its frozen config (``config``).

Actors never import ``gateway``: they meet it only through bus messages.
"""
