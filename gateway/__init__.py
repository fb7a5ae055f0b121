"""The edge: Twilio's ConversationRelay socket and webhooks on one port.

Layers, bottom up (each imports only the ones above it in this list):

- ``config``     the frozen settings the composition root builds.
- ``protocol``   sans-IO ConversationRelay: frames in, typed messages out.
- ``signature``, ``twiml``  pure helpers: X-Twilio-Signature, TwiML answers.
- ``http``       an h11 HTTP/1.1 front: routing, limits, WebSocket hand-off.
- ``metrics``    the per-gateway Prometheus registry.
- ``server``     ``serve_gateway``: sessions, the bus, fencing; the only I/O owner.

The gateway never imports ``actors``; the two meet only through bus messages.
"""
