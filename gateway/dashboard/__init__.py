"""The live dashboard and the operator API, served on the gateway's port.

Routes (all on the gateway's one port, next to the webhooks):

- ``GET /dashboard`` and its static files (``gateway/static/dashboard/``,
  shipped as package data: plain HTML, CSS and JavaScript, no build step);
- ``GET /dashboard/live``: a WebSocket that pushes changes as they happen
  (``live``);
- ``GET /api/calls``, ``/api/call?sid=``, ``/api/system``, ``/api/timeline``:
  the same data as JSON for ``switchboard calls`` and tools;
- ``GET /api/streams``, ``/api/range``, ``/api/read``, ``/api/tail``: raw
  entries of this namespace's streams (``operator_api``), so ``switchboard
  replay`` and ``tail`` work against a ``dev`` process exactly as against Redis.

Layered from the inside out: ``callview`` (one call as shown, and the JSON
it answers with), ``calllog`` (folds typed bus messages into call views;
pure), ``streams`` (reads the bus: backfill and one call's timeline),
``access`` (the token rules), ``live`` and ``operator_api`` (routes), and
``dashboard`` (the routes together and the tail that keeps the log current).
The gateway is an edge and must not import the actors: everything comes from
the bus plus what this gateway knows locally (its open sockets).
"""

from __future__ import annotations

from gateway.dashboard.access import DashboardAccess, json_response
from gateway.dashboard.calllog import CallLog
from gateway.dashboard.dashboard import Dashboard
from gateway.dashboard.streams import apply_entry, call_timeline, dead_letters, load_call_log

__all__ = [
    "CallLog",
    "Dashboard",
    "DashboardAccess",
    "apply_entry",
    "call_timeline",
    "dead_letters",
    "json_response",
    "load_call_log",
]
