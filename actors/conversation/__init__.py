"""The conversation: applies caller events and LLM results to each call.

Layered from the inside out:

- ``state``: ``CallState`` (history, turns, DTMF buffer, timers), persisted as JSON;
- ``rules``: the pure turn rules, ``apply(state, message, *, now, ...)``,
  built from ``turns``, ``bargein``, ``keypad`` and ``silence``; they return
  ``effects`` (messages to publish) and read no clock, bus or context;
- ``delta``: what a request carries of the history (what is new since the
  call's previous request) and its reference to the rest;
- ``limits``: the caps on what a call's state may hold (played text, history,
  DTMF), the oldest dropped and counted, applied after every entry;
- ``timers``: the durable per-partition timer index and the task that fires it;
- ``cache``: the states this worker last wrote, skipped reads under a lease;
- ``actor``: ``ConversationActor``, the I/O shell that loads the state, runs
  the rules, publishes their effects and persists the result under the lease.
"""

from __future__ import annotations

from actors.conversation.actor import ConversationActor
from actors.conversation.effects import Effect, FactOut, Incoming, Outbound
from actors.conversation.rules import Applied, apply
from actors.conversation.state import CallState, OpenTurn, Speaking

__all__ = [
    "Applied",
    "CallState",
    "ConversationActor",
    "Effect",
    "FactOut",
    "Incoming",
    "OpenTurn",
    "Outbound",
    "Speaking",
    "apply",
]
