"""The tool registry: entry points, settings validation, the idempotency record."""

from __future__ import annotations

import json
from typing import Any

import pytest

from actors.config import LLMConfig
from actors.tools import (
    ToolContext,
    ToolRegistry,
    builtin_tools,
    entry_point_tool_names,
    tool,
    tool_registry,
    tool_result_key,
)
from bus.keys import Keys
from bus.memory import MemoryBus
from switchboard.settings import Settings, SettingsError

KEYS = Keys(namespace="toolreg", partitions=4)
CALL = "CA00000000000000000000000000000077"


def context(tool_use_id: str = "toolu_1", **kwargs: Any) -> ToolContext:
    return ToolContext(
        call=CALL, session="VX1", turn=1, reply_to=3, tool_use_id=tool_use_id, **kwargs
    )


def test_the_example_tool_is_found_through_its_entry_point() -> None:
    assert "order_status" in entry_point_tool_names()
    registry = tool_registry(LLMConfig(tools=("end_call", "order_status")))
    names = [d["name"] for d in registry.definitions()]
    assert names == ["end_call", "order_status"]
    assert all(
        d["description"] and d["input_schema"]["type"] == "object" for d in registry.definitions()
    )
    assert not tool_registry(LLMConfig())


def test_settings_name_the_variable_of_a_bad_tool_setting() -> None:
    with pytest.raises(SettingsError, match=r"SWITCHBOARD_TOOLS.*'teleport'"):
        Settings.from_env({"SWITCHBOARD_TOOLS": "end_call,teleport"})
    with pytest.raises(SettingsError, match="SWITCHBOARD_TRANSFER_NUMBER"):
        Settings.from_env({"SWITCHBOARD_TOOLS": "transfer"})
    settings = Settings.from_env(
        {
            "SWITCHBOARD_TOOLS": " end_call , transfer ",
            "SWITCHBOARD_TRANSFER_QUEUE": "support",
            "SWITCHBOARD_LANGUAGE": "en-US",
            "SWITCHBOARD_LANGUAGES": "es-ES,en-US, fr-FR",
        }
    )
    config = settings.llm_config()
    assert config.tools == ("end_call", "transfer")
    assert config.transfer_queue == "support" and config.transfer_number is None
    assert config.languages == ("en-US", "es-ES", "fr-FR")


def test_an_unknown_enabled_tool_is_refused() -> None:
    with pytest.raises(ValueError, match="teleport"):
        ToolRegistry(builtin_tools(), ["teleport"])


async def test_a_tool_use_runs_once_and_its_result_is_recorded() -> None:
    runs: list[str] = []

    @tool(description="Books a table.")
    async def book_table(input: dict[str, Any], ctx: ToolContext) -> str:
        runs.append(ctx.idempotency_key)
        return f"Booked for {input['people']}."

    bus = MemoryBus()
    registry = ToolRegistry({"book_table": book_table}, ["book_table"])
    first = await registry.run(bus, KEYS, context(), "book_table", {"people": 2})
    again = await registry.run(bus, KEYS, context(), "book_table", {"people": 2})
    other = await registry.run(bus, KEYS, context("toolu_2"), "book_table", {"people": 4})
    assert runs == [f"{CALL}:3:toolu_1", f"{CALL}:3:toolu_2"]
    assert first == again and first.content == "Booked for 2." and not first.is_error
    assert other.content == "Booked for 4."
    stored = await bus.get(tool_result_key(KEYS, CALL, f"{CALL}:3:toolu_1"))
    assert stored is not None and json.loads(stored)["content"] == "Booked for 2."


async def test_a_replayed_end_sends_its_frame_again_but_never_repeats_digits() -> None:
    sent: list[tuple[str, bool]] = []

    async def sink(frame: dict[str, Any], *, after_speech: bool) -> None:
        sent.append((frame["type"], after_speech))

    bus = MemoryBus()
    registry = ToolRegistry(builtin_tools(), ["end_call", "send_digits"])
    for _ in range(2):
        await registry.run(bus, KEYS, context("toolu_e", _sink=sink), "end_call", {})
        await registry.run(
            bus, KEYS, context("toolu_d", _sink=sink), "send_digits", {"digits": "12"}
        )
    assert sent == [("end", True), ("sendDigits", False), ("end", True)]


async def test_the_example_tool_refuses_input_without_an_order_number() -> None:
    registry = tool_registry(LLMConfig(tools=("order_status",)))
    bad = await registry.run(MemoryBus(), KEYS, context(), "order_status", {"query": "hi"})
    assert bad.is_error and "order number" in bad.content
    good = await registry.run(
        MemoryBus(), KEYS, context(), "order_status", {"order_number": "1003"}
    )
    assert good.content == "Order 1003 delivered on Monday." and not good.is_error
