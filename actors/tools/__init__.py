"""Tools the model may call: the built-ins and user tools from entry points.

A tool is a ``Tool``: a name, a description and a JSON schema (what Claude
sees), an async callable ``run(input, ctx) -> str`` and a timeout. Its
string result goes back to the model as the ``tool_result``; an exception,
or running past ``timeout_s``, becomes a ``tool_result`` with
``is_error: true`` carrying the reason, so the model can apologise instead
of the reply failing.

Built-ins (enabled per profile, ``LLMConfig.tools``):

- ``end_call``: the call ends once the reply has been spoken
  (``end`` with ``handoffData {"reason": "end_call"}``, ``after_speech``).
- ``transfer``: the same with ``{"reason": "transfer", "number": ...}`` or
  ``{"reason": "transfer", "queue": ...}`` from ``LLMConfig``; the gateway's
  ``/action`` answers ``<Dial>`` or ``<Enqueue>``.
- ``send_digits``: a ``sendDigits`` frame (``0-9 * # w``).
- ``switch_language``: a ``language`` frame, limited to ``LLMConfig.languages``.

User tools are typed functions marked ``@tool`` in any importable module,
enabled by reference (``SWITCHBOARD_TOOLS=my_tools:lookup_order``, or the
profile's ``tools.enabled``); the model sees the function's name, its
docstring as the description and a JSON Schema read from its type hints
(``actors.tool_schema``)::

    @tool(timeout_s=3.0)
    async def lookup_order(
        order_number: Annotated[str, "four digits"], ctx: ToolContext
    ) -> str:
        '''Look up an order's status.'''

The model's input is checked against the hints before the function runs (a
mismatch goes back to the model as an error result). Tools can also be
registered under the ``switchboard.tools`` entry-point group (the entry point
names a ``Tool``: ``switchboard.tools.weather = "my_pkg:weather"``), and the
older form, ``@tool(description=..., input_schema={...})`` on an
``async def f(input: dict, ctx)``, keeps working.

Layout: ``context`` (what a running tool knows; its outcome), ``tool`` (the
``Tool`` type and the ``@tool`` decorator), ``builtin`` (the built-ins),
``discovery`` (entry points and ``module:function`` references) and
``registry`` (the enabled tools, and running one use at most once: its
docstring has that contract and its limits).
"""

from __future__ import annotations

from actors.tools.builtin import BUILTIN_TOOLS, builtin_tools
from actors.tools.context import FrameSink, ToolContext, ToolError, ToolOutcome
from actors.tools.discovery import (
    ENTRY_POINT_GROUP,
    entry_point_tool_names,
    entry_point_tools,
    is_reference,
    load_reference,
)
from actors.tools.registry import (
    CANCELLED_RESULT,
    CLAIM_MARGIN_S,
    CLAIM_POLL_CAP_S,
    CLAIM_POLL_S,
    INTERRUPTED_RESULT,
    RECORD_ON_CANCEL_S,
    RESULT_TTL_MS,
    ToolRegistry,
    tool_registry,
    tool_result_key,
)
from actors.tools.tool import DEFAULT_TIMEOUT_S, Tool, ToolFunc, tool

__all__ = [
    "BUILTIN_TOOLS",
    "CANCELLED_RESULT",
    "CLAIM_MARGIN_S",
    "CLAIM_POLL_CAP_S",
    "CLAIM_POLL_S",
    "DEFAULT_TIMEOUT_S",
    "ENTRY_POINT_GROUP",
    "INTERRUPTED_RESULT",
    "RECORD_ON_CANCEL_S",
    "RESULT_TTL_MS",
    "FrameSink",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolFunc",
    "ToolOutcome",
    "ToolRegistry",
    "builtin_tools",
    "entry_point_tool_names",
    "entry_point_tools",
    "is_reference",
    "load_reference",
    "tool",
    "tool_registry",
    "tool_result_key",
]
