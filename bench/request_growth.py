"""How the bytes of one call's LLM requests grow with its turns.

Drives the conversation's turn rules (``actors.conversation.apply``, pure: no
bus, no clock) through one call of N turns, each a ~50-word prompt answered
by a ~60-word reply, and encodes every ``llm.request`` it asks for as the
conversation worker would put it on the request stream. Prints the size of
the request at a few turns, what the call's requests add up to (what the
request stream keeps of the call for the retention), and the call state's
size at the end (one key, overwritten each entry).

    python bench/request_growth.py [--turns 40]

A request carries only the history new since the call's previous request
(``actors/conversation/delta.py``), so the total grows linearly with the
turns. For comparison the same requests are also encoded as they were when
each carried the whole history (rebuilt as an LLM worker rebuilds them),
which grows with the square of the turns. Figures go to docs/OPERATIONS.md
(*Redis memory*) and docs/CAPACITY.md by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and its bench/bus.py
# would shadow the ``bus`` package: look for packages from the project root.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from dataclasses import replace

import structlog

from actors.config import ConversationConfig
from actors.conversation import CallState, Incoming, Outbound, apply
from actors.llm.history import resolve_in_order
from bus.messages import CallPrompt, CallSetup, LlmRequest, LlmResult, envelope

CALL = "CA00000000000000000000000000000042"
SESSION = "VX00000000000000000000000000000042"
PROMPT = " ".join(["word"] * 49 + ["question?"])  # ~50 words
REPLY = " ".join(["answer"] * 59 + ["done."])  # ~60 words


def entry_bytes(out: Outbound, message: LlmRequest | None = None) -> int:
    env = envelope(
        message or out.message,
        call=out.call,
        session=out.session,
        gateway=out.gateway,
        seq=out.seq,
        turn=out.turn,
        epoch=7,
    )
    return sum(len(k) + len(v.encode()) for k, v in env.encode().items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=40)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    config = ConversationConfig(system_prompt="You are a test agent.", welcome_greeting="Hello.")
    state: CallState | None = None
    seq = 0

    def feed(message: object, turn: int = 0) -> list[Outbound]:
        nonlocal state, seq
        seq += 1
        incoming = Incoming(message, CALL, SESSION, "gw1", seq=seq, turn=turn)  # type: ignore[arg-type]
        applied = apply(state, incoming, config=config, now=0.0, wall_ms=0.0)
        state = applied.state or state
        return [e for e in applied.effects if isinstance(e, Outbound)]

    feed(CallSetup(session_id=SESSION, call_sid=CALL))
    outs: list[Outbound] = []
    for _ in range(args.turns):
        (out,) = [
            o for o in feed(CallPrompt(PROMPT, "en-US", True)) if isinstance(o.message, LlmRequest)
        ]
        outs.append(out)
        assert isinstance(out.message, LlmRequest) and out.message.reply_to is not None
        feed(LlmResult(text=REPLY, reply_to=out.message.reply_to), turn=out.turn)
    assert state is not None
    requests = [o.message for o in outs if isinstance(o.message, LlmRequest)]
    whole = resolve_in_order((CALL, r) for r in requests)
    sizes = {
        "carried now": [entry_bytes(o) for o in outs],
        "whole history (before)": [
            entry_bytes(o, replace(r, messages=w or [], history=None))
            for o, r, w in zip(outs, requests, whole, strict=True)
        ],
    }
    for name, per_turn in sizes.items():
        print(f"{name}:")
        for n in sorted({1, 10, 20, args.turns} & set(range(1, args.turns + 1))):
            print(f"  request at turn {n:>3}: {per_turn[n - 1] / 1024:7.1f} KB")
        total = sum(per_turn)
        print(
            f"  all {args.turns} requests of the call: {total / 1024:7.1f} KB "
            f"({total / args.turns / 1024:.2f} KB per turn)"
        )
    print(f"call state at the end: {len(state.to_json()) / 1024:7.1f} KB")


if __name__ == "__main__":
    main()
