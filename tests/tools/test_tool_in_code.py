"""Tools in code: a typed function marked ``@tool``, its schema read from its
hints and its description from its docstring, used by reference
(``module:function``) in a call."""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any, Literal

import pytest
import trio

from actors.tools import Tool, ToolContext, ToolError, load_reference, tool
from bus.memory import MemoryBus
from bus.messages.json import JsonObject
from switchboard.runner import start_dev
from switchboard.settings import Settings, SettingsError
from switchboard.twilio import open_call


class Area(enum.Enum):
    INSIDE = "inside"
    TERRACE = "terrace"


@tool
async def reserve(
    party_size: int,
    day: Literal["friday", "saturday"],
    area: Area = Area.INSIDE,
    notes: Annotated[str | None, "anything the caller asked for"] = None,
    names: list[str] | None = None,
    deposit: float = 0.0,
    high_chair: bool = False,
    *,
    ctx: ToolContext,
) -> str:
    """Reserve a table.

    Args:
        party_size: how many people, children included
        day: the evening of the booking
        area: where to sit; the terrace
            closes in the rain
    """
    return f"{party_size} {day} {area.value} {notes} {names} {deposit} {high_chair} {ctx.call}"


def ctx() -> ToolContext:
    return ToolContext(call="CA1", session="VX1", turn=1, reply_to=3, tool_use_id="tu1")


def test_the_schema_comes_from_the_hints_and_the_docstring() -> None:
    assert isinstance(reserve, Tool) and reserve.name == "reserve"
    assert reserve.description == "Reserve a table."
    assert reserve.input_schema == {
        "type": "object",
        "properties": {
            "party_size": {"type": "integer", "description": "how many people, children included"},
            "day": {
                "type": "string",
                "enum": ["friday", "saturday"],
                "description": "the evening of the booking",
            },
            "area": {
                "type": "string",
                "enum": ["inside", "terrace"],
                "description": "where to sit; the terrace closes in the rain",
                "default": "inside",
            },
            "notes": {"type": ["string", "null"], "description": "anything the caller asked for"},
            "names": {"type": ["array", "null"], "items": {"type": "string"}},
            "deposit": {"type": "number", "default": 0.0},
            "high_chair": {"type": "boolean", "default": False},
        },
        "required": ["party_size", "day"],
    }


async def test_the_input_is_checked_and_converted_before_the_function_runs() -> None:
    out = await reserve.run(
        {"party_size": 4, "day": "friday", "area": "terrace", "names": ["Ada"]}, ctx()
    )
    assert out == "4 friday terrace None ['Ada'] 0.0 False CA1"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"day": "friday"}, "missing argument 'party_size'"),
        ({"party_size": "four", "day": "friday"}, "argument 'party_size': expected a whole"),
        ({"party_size": 4, "day": "sunday"}, "argument 'day': expected one of"),
        ({"party_size": 4, "day": "friday", "area": "roof"}, "argument 'area'"),
        ({"party_size": 4, "day": "friday", "when": "now"}, "unknown argument(s) when"),
    ]
    for bad, says in cases:
        with pytest.raises(ToolError, match=says.replace("(", r"\(").replace(")", r"\)")):
            await reserve.run(bad, ctx())


async def test_a_plain_function_and_overrides() -> None:
    @tool(name="add_up", description="Add two numbers.", timeout_s=1.0)
    def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    assert (add.name, add.description, add.timeout_s) == ("add_up", "Add two numbers.", 1.0)
    assert json.loads(await add.run({"a": 2, "b": 3}, ctx())) == {"sum": 5}


def test_what_cannot_be_a_tool_is_refused_with_the_parameter_named() -> None:
    with pytest.raises(TypeError, match="parameter 'when'"):

        @tool
        async def bad(when: dict[str, Any]) -> str:
            """Never."""
            return ""

    with pytest.raises(TypeError, match="needs a docstring"):

        @tool
        async def undocumented(x: int) -> str:
            return ""


async def test_the_older_form_still_takes_the_whole_input() -> None:
    @tool(description="Echo.", input_schema={"type": "object", "properties": {}})
    async def echo(input: dict[str, Any], ctx: ToolContext) -> str:
        return json.dumps(input)

    assert await echo.run({"x": 1}, ctx()) == '{"x": 1}'


async def test_the_older_form_may_type_its_input_as_json() -> None:
    @tool
    async def keep(input: JsonObject, ctx: ToolContext) -> str:
        """Keep whatever the model sends."""
        return json.dumps(input)

    assert keep.input_schema == {"type": "object", "properties": {}}
    assert await keep.run({"x": [1, None]}, ctx()) == '{"x": [1, null]}'


def test_a_reference_must_name_a_tool() -> None:
    assert load_reference("booking_tools:book_table").name == "book_table"
    for ref, says in [
        ("booking_tools:not_a_tool", "mark the function with @tool"),
        ("booking_tools:missing", "has no 'missing'"),
        ("no_such_module_here:f", "cannot import"),
    ]:
        with pytest.raises(SettingsError, match=says):
            Settings.from_env({"SWITCHBOARD_TOOLS": ref})


async def test_a_tool_in_a_plain_module_is_used_in_a_call() -> None:
    from booking_tools import BOOKED

    settings = Settings.from_env(
        {
            "SWITCHBOARD_PORT": "0",
            "SWITCHBOARD_PARTITIONS": "2",
            "SWITCHBOARD_TOOLS": "booking_tools:book_table,end_call",
        }
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, MemoryBus())
            async with open_call(f"http://127.0.0.1:{port}") as call:
                await call.prompt("Please book table for 4 on Friday.")
                reply = await call.reply()
            nursery.cancel_scope.cancel()
    assert BOOKED[call.call_sid] == 4
    assert '{"booked": true, "party": 4}' in reply.text
