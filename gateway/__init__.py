"""The edge: Twilio's ConversationRelay socket and webhooks on one port.

Layers, bottom up (each imports only the ones above it in this list):

- ``config``     the frozen settings the composition root builds.
- ``twiml``      the TwiML answers of the voice webhook and ``POST /action``.
- ``http``       an h11 HTTP/1.1 front: routing, limits, WebSocket hand-off.
- ``metrics``    the per-gateway Prometheus registry.
- ``server``     ``serve_gateway``: sessions, the bus, fencing; the only I/O owner.

The ConversationRelay protocol itself (messages, codec, session state,
signatures, TwiML rendering) is the pure :mod:`relay` package. The gateway
imports only ``relay`` and ``bus``, never ``actors``: the two meet only
through bus messages.
"""
