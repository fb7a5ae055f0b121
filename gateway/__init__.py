"""The edge: Twilio's ConversationRelay socket and webhooks on one port.

Layers, bottom up (each imports only the ones above it in this list):

- ``config``     the frozen settings the composition root builds.
- ``fence``, ``speech``, ``reply_deadline``  pure rules: which reply tokens
                 may still be spoken; when the agent has finished speaking;
                 when a caller waited too long for a reply to start.
- ``spoken``     pure: text for TTS cleaned and split into frames that fit.
- ``calltoken``  pure: the per-call session token a ``setup`` must carry.
- ``twiml``      the TwiML answers of the voice webhook and ``POST /action``.
- ``http_message``, ``routing``, ``replay_stream``, ``accept``  the HTTP
                 vocabulary; routing; the WebSocket hand-off; accepting
                 connections under a limit.
- ``http``       an h11 HTTP/1.1 front on them: one connection's requests.
- ``metrics``    the per-gateway Prometheus registry.
- ``session``, ``context``  one socket's state; what the parts share.
- ``inbound``    a Twilio frame becomes a stamped caller event on the bus.
- ``dispatch``   this gateway's bus stream to the sockets (fence, after_speech).
- ``lifecycle``  a socket's life: accept, setup, frames in order, close.
- ``health``     live workers per role and consumer-group lag: gauges, warnings.
- ``webhooks``   the HTTP routes' handlers, signature-checked.
- ``drain``      SIGTERM: no new calls, live ones go on, the rest handed over.
- ``server``     ``serve_gateway``: composes the parts.

The ConversationRelay protocol itself (messages, codec, session state,
signatures, TwiML rendering) is the pure :mod:`relay` package. The gateway
imports only ``relay`` and ``bus``, never ``actors``: the two meet only
through bus messages.
"""
