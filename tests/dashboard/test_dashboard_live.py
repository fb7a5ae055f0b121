"""The live feed: a call shows up while it happens, its reply grows as it streams.

A whole dev composition (gateway and every actor on a memory bus) in this
process; the Twilio-side simulator places the call; the test reads the
dashboard's WebSocket as the page does and waits for each message it expects.
"""

from __future__ import annotations

from typing import Any

import trio
from dashkit import live_feed, running_dev

from switchboard.operator_api import OperatorApi
from switchboard.twilio import open_call


def _has_call(sid: str, **fields: Any) -> Any:
    def check(msg: dict[str, Any]) -> bool:
        if msg["type"] not in ("snapshot", "calls"):
            return False
        return any(
            c["call"] == sid and all(c.get(k) == v for k, v in fields.items()) for c in msg["calls"]
        )

    return check


def _agent(msg: dict[str, Any]) -> list[dict[str, Any]]:
    call = msg.get("call") or {}
    return [i for i in call.get("transcript", []) if i["kind"] == "agent"]


async def test_a_call_appears_live_and_its_reply_streams_into_the_transcript() -> None:
    with trio.fail_after(30):
        async with running_dev(SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS="15") as (port, _bus):
            base = f"http://127.0.0.1:{port}"
            async with live_feed(port) as feed:
                await feed.until(lambda m: m["type"] == "snapshot")
                async with open_call(base) as call:
                    sid = call.call_sid
                    await feed.until(_has_call(sid, open=True))
                    await feed.watch(sid)
                    await call.prompt("Tell me about the opening hours please.")
                    growing = await feed.until(
                        lambda m: (
                            m["type"] == "call"
                            and any(not a["done"] and a["text"] for a in _agent(m))
                        )
                    )
                    partial = next(a["text"] for a in _agent(growing) if not a["done"])
                    reply = await call.reply()
                    done = await feed.until(
                        lambda m: (
                            m["type"] == "call"
                            and any(a["done"] and a["text"] == reply.text for a in _agent(m))
                        )
                    )
                    # The transcript showed the reply before it was complete.
                    assert reply.text.startswith(partial) and partial != reply.text
                    caller = [i for i in done["call"]["transcript"] if i["kind"] == "caller"]
                    assert [i["text"] for i in caller] == [
                        "Tell me about the opening hours please."
                    ]
                await feed.until(_has_call(sid, open=False, outcome="caller hung up"))
            # The same story over the JSON API.
            listed = await OperatorApi(base).get("/api/calls")
            assert listed["calls"][0]["call"] == sid and listed["calls"][0]["turns"] == 1
            detail = await OperatorApi(base).get("/api/call", sid=sid)
            (timing,) = detail["turn_timings"]
            assert timing["first_token_ms"] is not None
            assert set(timing["stages_ms"]) == {
                "gateway_to_conversation",
                "conversation_to_llm",
                "llm_first_token",
                "to_caller",
            }
            timeline = await OperatorApi(base).get("/api/timeline", sid=sid)
            labels = [e["label"] for e in timeline["entries"]]
            # The gateway stamps its call_started fact as it reads the setup frame
            # (the greeting's info events may come in between).
            opening = [label for label in labels if label != "call.info"][:2]
            assert set(opening) == {"call.setup", "event:call_started"}
            assert {"call.prompt", "llm.request", "llm.tokens", "llm.result"} <= set(labels)
            system = await OperatorApi(base).get("/api/system")
            assert system["calls_open"] == 0 and system["latency"]["turns"] == 1
            assert system["workers"] == {
                "conversation": ["w-dev-conversation"],
                "llm": ["w-dev-llm"],
                "telemetry": ["w-dev-telemetry"],
            }
