"""A tool: what the model sees and what runs; ``@tool`` makes one of a function."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, overload

from actors.tool_schema import ArgumentError, coerce_arguments, read_signature
from actors.tools.context import ToolContext, ToolError
from bus.messages.json import JsonObject, JsonValue

DEFAULT_TIMEOUT_S = 5.0


ToolFunc = Callable[[JsonObject, ToolContext], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool: what the model sees (``definition``) and what runs."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    run: ToolFunc
    timeout_s: float = DEFAULT_TIMEOUT_S

    def definition(self) -> JsonObject:
        """The tool as the Messages API's ``tools`` parameter lists it."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": dict(self.input_schema),
        }


@overload
def tool(func: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    description: str | None = None,
    input_schema: Mapping[str, Any] | None = None,
    name: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    description: str | None = None,
    input_schema: Mapping[str, Any] | None = None,
    name: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a ``Tool`` of a function: ``@tool`` or ``@tool(timeout_s=..., ...)``.

    A typed function (``async def`` or a quick plain ``def``) gets its schema
    from its type hints and its description from its docstring (see
    ``actors.tool_schema``); ``description`` and ``name`` override them. A
    function of the older form ``(input: dict, ctx)``, or any function given an
    explicit ``input_schema``, receives the model's input as one dict.
    ``TypeError`` names what cannot be read.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        tool_name = name or str(getattr(f, "__name__", "tool"))
        if input_schema is not None or _takes_raw_input(f):
            text = description or inspect.getdoc(f) or ""
            if not text:
                raise TypeError(f"tool {tool_name!r} needs a description or a docstring")
            return Tool(
                name=tool_name,
                description=text,
                input_schema=input_schema or {"type": "object", "properties": {}},
                run=f,
                timeout_s=timeout_s,
            )
        return _typed_tool(f, tool_name, description, timeout_s)

    return wrap(func) if func is not None else wrap


def _takes_raw_input(func: Callable[..., Any]) -> bool:
    """The older tool form: ``(input: dict, ctx: ToolContext)`` (or ``JsonObject``)."""
    params = list(inspect.signature(func).parameters.values())
    if len(params) != 2:
        return False
    # JsonValue refers to itself by name: resolving a JsonObject hint needs it in scope.
    hint = typing.get_type_hints(func, localns={"JsonValue": JsonValue}).get(params[0].name)
    return hint is dict or typing.get_origin(hint) in (dict, Mapping)


def _typed_tool(
    func: Callable[..., Any], name: str, description: str | None, timeout_s: float
) -> Tool:
    signature = read_signature(func, context_type=ToolContext)
    text = description or signature.description
    if not text:
        raise TypeError(f"tool {name!r} needs a docstring: it is what the model reads")

    async def run(input: JsonObject, ctx: ToolContext) -> str:
        try:
            kwargs = coerce_arguments(signature, input)
        except ArgumentError as exc:
            raise ToolError(str(exc)) from None
        if signature.context_parameter is not None:
            kwargs[signature.context_parameter] = ctx
        result = func(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return _as_text(result)

    return Tool(name, text, signature.input_schema(), run, timeout_s)


def _as_text(result: Any) -> str:
    """What the model reads back: a string as is, anything else as JSON."""
    if isinstance(result, str):
        return result
    if result is None:
        return "done"
    return json.dumps(result, default=str, ensure_ascii=False)
