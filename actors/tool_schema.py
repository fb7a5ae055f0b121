"""A tool's JSON Schema and description, read from a typed Python function.

The model sees a tool as a name, a description and an input schema. Written
by hand they drift from the code; here they come from the function itself,
as LiveKit Agents' ``@function_tool`` does:

- the description is the docstring's text before any ``Args:`` section;
- each parameter is a property; its type comes from the type hint: ``str``,
  ``int``, ``float``, ``bool``, ``Literal[...]`` (an ``enum``), an ``Enum``
  subclass (its values), ``list[T]``, ``Optional[T]`` / ``T | None``;
- a parameter without a default is required;
- a parameter's description comes from ``Annotated[T, "text"]`` (or a
  ``pydantic.Field``-like object with a ``description``), else from its line
  in the docstring's ``Args:`` section (Google style);
- a parameter annotated with ``ToolContext`` (any name) is not shown to the
  model: the runtime passes the call's context there.

``coerce_arguments`` checks the model's input against the same hints and
converts it to the declared Python types (an ``Enum`` member for its value),
raising ``ArgumentError`` with a message for the model when it does not fit.
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bus.messages.json import JsonObject, JsonValue

__all__ = ["ArgumentError", "Parameter", "ToolSignature", "coerce_arguments", "read_signature"]

_NONE = type(None)
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_OTHER_SECTION = re.compile(r"^\s*(Returns?|Raises|Yields|Examples?|Notes?)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


class ArgumentError(ValueError):
    """The model's input does not fit the tool's parameters (said to the model)."""


@dataclass(frozen=True, slots=True)
class Parameter:
    """One parameter the model fills in."""

    name: str
    hint: Any
    required: bool
    default: Any
    schema: JsonObject


@dataclass(frozen=True, slots=True)
class ToolSignature:
    """What a typed tool function asks of the model, and where its context goes."""

    description: str
    parameters: tuple[Parameter, ...]
    context_parameter: str | None

    def input_schema(self) -> JsonObject:
        schema: JsonObject = {
            "type": "object",
            "properties": {p.name: p.schema for p in self.parameters},
        }
        required: list[JsonValue] = [p.name for p in self.parameters if p.required]
        if required:
            schema["required"] = required
        return schema


def read_signature(func: Callable[..., Any], *, context_type: type) -> ToolSignature:
    """Read ``func``'s schema and description; ``TypeError`` for a hint we cannot
    express (the message names the parameter)."""
    name = getattr(func, "__qualname__", repr(func))
    hints = typing.get_type_hints(func, include_extras=True)
    summary, arg_docs = _parse_docstring(inspect.getdoc(func) or "")
    params: list[Parameter] = []
    context: str | None = None
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{name}: *args and **kwargs cannot be tool parameters")
        if param.name not in hints:
            raise TypeError(f"{name}: parameter {param.name!r} needs a type hint")
        hint = hints[param.name]
        if _strip_annotated(hint)[0] is context_type:
            context = param.name
            continue
        base, described = _strip_annotated(hint)
        try:
            schema = _schema(base)
        except TypeError as exc:
            raise TypeError(f"{name}: parameter {param.name!r}: {exc}") from None
        text = described or arg_docs.get(param.name)
        if text:
            schema["description"] = text
        required = param.default is inspect.Parameter.empty
        shown = _json_value(param.default) if not required else None
        if shown is not None:
            schema["default"] = shown
        params.append(Parameter(param.name, base, required, param.default, schema))
    return ToolSignature(summary, tuple(params), context)


def coerce_arguments(signature: ToolSignature, data: Mapping[str, object]) -> dict[str, object]:
    """The keyword arguments for the tool function, checked against its hints."""
    known = {p.name for p in signature.parameters}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ArgumentError(f"unknown argument(s) {', '.join(unknown)}")
    out: dict[str, object] = {}
    for p in signature.parameters:
        if p.name not in data:
            if p.required:
                raise ArgumentError(f"missing argument {p.name!r}")
            continue
        try:
            out[p.name] = _coerce(p.hint, data[p.name])
        except ArgumentError as exc:
            raise ArgumentError(f"argument {p.name!r}: {exc}") from None
    return out


# --------------------------------------------------------------------------- hints


def _strip_annotated(hint: Any) -> tuple[Any, str | None]:
    """``Annotated[T, "text"]`` -> (T, "text"); anything else -> (hint, None)."""
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
        for extra in extras:
            if isinstance(extra, str):
                return base, extra
            described = getattr(extra, "description", None)
            if isinstance(described, str):
                return base, described
        return base, None
    return hint, None


def _optional_inner(hint: Any) -> Any | None:
    """T for ``T | None`` / ``Optional[T]``; None when ``hint`` is not optional."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not _NONE]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def _schema(hint: Any) -> JsonObject:
    inner = _optional_inner(hint)
    if inner is not None:
        optional = _schema(_strip_annotated(inner)[0])
        kind = optional.get("type")
        if isinstance(kind, str):
            optional["type"] = [kind, "null"]
        return optional
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        values = list(typing.get_args(hint))
        return {"type": _json_type(values), "enum": values}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [member.value for member in hint]
        return {"type": _json_type(values), "enum": values}
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple, set, frozenset):
        args = typing.get_args(hint)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError("use list[T] (or tuple[T, ...]) for a list")
        item = args[0] if args else None
        schema: JsonObject = {"type": "array"}
        if item is not None:
            schema["items"] = _schema(_strip_annotated(item)[0])
        return schema
    raise TypeError(
        f"{hint!r} cannot be a tool parameter "
        "(use str, int, float, bool, Literal, an Enum, list[...] or Optional[...])"
    )


def _json_type(values: list[Any]) -> str:
    kinds = {type(v) for v in values}
    if kinds <= {str}:
        return "string"
    if kinds <= {bool}:
        return "boolean"
    if kinds <= {int}:
        return "integer"
    if kinds <= {int, float}:
        return "number"
    raise TypeError(f"enum values must share one JSON type, got {values!r}")


def _json_value(value: Any) -> str | int | float | bool | None:
    """``value`` as JSON shows it (an Enum by its value); None if it has no such form."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, str | int | float | bool):
        return value
    return None


def _coerce(hint: Any, value: Any) -> Any:
    hint = _strip_annotated(hint)[0]
    inner = _optional_inner(hint)
    if inner is not None:
        return None if value is None else _coerce(inner, value)
    if hint is str:
        if not isinstance(value, str):
            raise ArgumentError(f"expected a string, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ArgumentError(f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ArgumentError(f"expected a whole number, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ArgumentError(f"expected a number, got {value!r}")
        return float(value)
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ArgumentError(f"expected one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise ArgumentError(
                f"expected one of {[m.value for m in hint]}, got {value!r}"
            ) from None
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple, set, frozenset):
        if not isinstance(value, list):
            raise ArgumentError(f"expected a list, got {value!r}")
        args = typing.get_args(hint)
        items = [_coerce(args[0], v) for v in value] if args else list(value)
        container = origin or hint
        return items if container is list else container(items)
    raise ArgumentError(f"cannot read {value!r}")  # unreachable: read_signature refused it


# --------------------------------------------------------------------------- docstrings


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(the text before the sections, {parameter: description} from ``Args:``)."""
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in doc.splitlines():
        if _SECTION.match(line):
            section, current = "args", None
            continue
        if _OTHER_SECTION.match(line):
            section, current = "other", None
            continue
        if section is None:
            summary.append(line)
        elif section == "args":
            found = _ARG_LINE.match(line)
            if found is not None and not line.startswith(" " * 8):
                current = found.group(1).lstrip("*")
                args[current] = found.group(2).strip()
            elif current is not None and line.strip():
                args[current] = f"{args[current]} {line.strip()}".strip()
    return "\n".join(summary).strip(), args
