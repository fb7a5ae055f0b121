"""A plain module with a tool in code, as a user would write one (no package,
no entry point): ``SWITCHBOARD_TOOLS=booking_tools:book_table``."""

from __future__ import annotations

import re
from typing import Annotated

from actors.tools import ToolContext, tool

BOOKED: dict[str, int] = {}


@tool(timeout_s=2.0)
async def book_table(
    query: Annotated[str, "the caller's words about the booking"], ctx: ToolContext
) -> dict[str, object]:
    """Book a table at the restaurant for the party size the caller gives."""
    found = re.search(r"\bfor (\d+)\b", query)
    if found is None:
        return {"booked": False, "ask": "how many people"}
    BOOKED[ctx.call] = int(found.group(1))
    return {"booked": True, "party": int(found.group(1))}


def not_a_tool(query: str) -> str:
    """A plain function: naming it as a tool is refused."""
    return query
