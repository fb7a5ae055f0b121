"""The LLM actor, one concept per module, bottom up:

- ``reply``: the history messages one reply produces (``ReplyMessages``).
- ``cancel``: the control tail and the generations a cancel stops.
- ``resume``: what earlier deliveries of a request already sent.
- ``history``: a request's whole history, rebuilt from the worker's copy of
  the call's previous request or from the call's state (requests carry only
  what is new).
- ``stream``: the token stream to the gateway, first at once, then coalesced.
- ``generate``: the completion rounds, with tools in between.
- ``result``, ``facts``: the ``llm.result`` and the facts of a finished reply.
- ``actor``: ``LLMActor``, which ties them together for each request.
"""

from actors.llm.actor import LLMActor
from actors.llm.reply import ReplyMessages
from actors.llm.result import APOLOGY
from actors.llm.resume import SentSoFar

__all__ = ["APOLOGY", "LLMActor", "ReplyMessages", "SentSoFar"]
