"""The built-in tools: end the call, transfer it, press keys, switch language."""

from __future__ import annotations

from collections.abc import Sequence

from actors.tools.context import ToolContext, ToolError
from actors.tools.tool import Tool
from bus.messages.json import JsonObject, JsonValue
from relay import Handoff, dtmf, to_wire

BUILTIN_TOOLS = ("end_call", "transfer", "send_digits", "switch_language")
_MAX_DIGITS = 64


async def _end_call(input: JsonObject, ctx: ToolContext) -> str:
    await ctx.send(to_wire(Handoff.end_call().end()), after_speech=True)
    return "The call will end after your goodbye has been spoken."


async def _transfer(input: JsonObject, ctx: ToolContext) -> str:
    destination = str(input.get("destination") or "")
    if ctx.transfer_queue and (destination == "queue" or not ctx.transfer_number):
        handoff = Handoff.transfer(queue=ctx.transfer_queue)
    elif ctx.transfer_number:
        handoff = Handoff.transfer(number=ctx.transfer_number)
    else:
        raise ToolError("no transfer number or queue is configured")
    await ctx.send(to_wire(handoff.end()), after_speech=True)
    return "The caller will be transferred after your last words have been spoken."


async def _send_digits(input: JsonObject, ctx: ToolContext) -> str:
    digits = str(input.get("digits", "")).replace(" ", "")
    if len(digits) > _MAX_DIGITS or not dtmf.is_send_digits(digits):
        raise ToolError(f"digits must be 1-64 of 0-9 * # w, got {digits!r}")
    await ctx.send({"type": "sendDigits", "digits": digits})
    return f"Sent the digits {digits}."


async def _switch_language(input: JsonObject, ctx: ToolContext) -> str:
    language = str(input.get("language", ""))
    if language not in ctx.languages:
        raise ToolError(
            f"language {language!r} is not available (available: {', '.join(ctx.languages)})"
        )
    await ctx.send({"type": "language", "ttsLanguage": language, "transcriptionLanguage": language})
    return f"Speech and transcription are now in {language}; answer in that language."


def builtin_tools(languages: Sequence[str] = ()) -> dict[str, Tool]:
    """The built-in tools; ``switch_language`` offers ``languages`` as its choices."""
    language_schema: JsonObject = {"type": "string", "description": "BCP-47 code"}
    if languages:
        language_schema["enum"] = list[JsonValue](languages)
    return {
        "end_call": Tool(
            "end_call",
            "End the phone call. Say a short goodbye in the same reply first; the call "
            "ends once it has been spoken. Use when the caller is done or says goodbye.",
            {"type": "object", "properties": {}},
            _end_call,
        ),
        "transfer": Tool(
            "transfer",
            "Transfer the caller to a human. Tell the caller you are transferring them "
            "in the same reply first; the transfer happens once that has been spoken.",
            {
                "type": "object",
                "properties": {
                    "destination": {
                        "type": "string",
                        "enum": ["number", "queue"],
                        "description": "a person's number, or the waiting queue",
                    }
                },
            },
            _transfer,
        ),
        "send_digits": Tool(
            "send_digits",
            "Press keys on the phone line (DTMF), e.g. to navigate another system's "
            "menu. Digits 0-9, * and #; w waits half a second.",
            {
                "type": "object",
                "properties": {"digits": {"type": "string", "pattern": "^[0-9*#w]+$"}},
                "required": ["digits"],
            },
            _send_digits,
        ),
        "switch_language": Tool(
            "switch_language",
            "Switch the language the caller hears and is understood in. Use when the "
            "caller asks to speak another language; then answer in it.",
            {
                "type": "object",
                "properties": {"language": language_schema},
                "required": ["language"],
            },
            _switch_language,
        ),
    }
