"""An example user tool for Switchboard: look up an order's status.

A tool is an ``async def f(input, ctx) -> str`` made into a
``actors.tools.Tool`` with the ``tool`` decorator (name, description and
JSON schema are what Claude sees) and registered under the
``switchboard.tools`` entry-point group (see ``pyproject.toml``).

The "database" here is a dict; a real tool would call an API. Two habits
worth copying:

- Side effects are keyed by ``ctx.idempotency_key``. Switchboard already
  records each tool use's result and never runs the same use twice, but an
  external API that takes an idempotency key (payments, bookings) should get
  this one too, so a retry inside the tool itself is safe.
- Bad input is answered with ``ToolError``: its message goes back to the
  model as an error result, so the agent can ask the caller again.
"""

from __future__ import annotations

import re
from typing import Any

from actors.tools import ToolContext, ToolError, tool

ORDERS = {
    "1001": "shipped yesterday and arrives tomorrow",
    "1002": "being packed and ships today",
    "1003": "delivered on Monday",
}
_ORDER_NUMBER = re.compile(r"\b(\d{4})\b")


@tool(
    description=(
        "Look up the status of a customer's order by its four-digit order number. "
        "Ask the caller for the number first if you do not have it."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "order_number": {"type": "string", "description": "four digits, e.g. 1001"},
            "query": {"type": "string", "description": "the caller's words, if no number"},
        },
    },
    timeout_s=3.0,
)
async def order_status(input: dict[str, Any], ctx: ToolContext) -> str:
    """The order's status in a sentence the agent can read out."""
    raw = str(input.get("order_number") or input.get("query") or "")
    match = _ORDER_NUMBER.search(raw)
    if match is None:
        raise ToolError("no four-digit order number given; ask the caller for it")
    number = match.group(1)
    status = ORDERS.get(number)
    if status is None:
        return f"There is no order {number}."
    return f"Order {number} {status}."
