"""Prompt caching, end to end, against the local fake of the Anthropic API.

Calls of several turns through ``switchboard dev`` (gateway, conversation,
LLM actor with the real ``AnthropicProvider`` and the real SDK) against
``tests/fakes/anthropic_server.py``, which models the API's prompt cache:
prefixes written at ``cache_control`` breakpoints at least
``--cache-min-tokens`` long, read back by a later request, and a request
that read from the cache answered after ``--hit-ttft-ms`` instead of
``--ttft-ms``. The same calls run twice in one run, with
``SWITCHBOARD_PROMPT_CACHE`` on and off, and the caller's wait (the final
prompt sent -> the first ``text`` frame back) is measured per turn.

What it shows: which requests carry ``cache_control``, which turns hit the
cache and how many tokens they read and wrote, and that a hit reaches the
caller as the lower first-token time the provider gave, with nothing lost
on the way. What it cannot show: how much faster the real API answers from
its cache. That is the fake's setting (``--hit-ttft-ms``), not a measurement.

    python bench/prompt_cache.py [--calls 20] [--turns 4] [--ttft-ms 600]
                                 [--hit-ttft-ms 300] [--system-words 1500] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import trio

# Run as a script, this folder comes first on sys.path, and its bench/bus.py
# would shadow the ``bus`` package: look for packages from the project root.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "tests"))  # the fake of the API lives with the tests

from fakes.anthropic_server import FakeAnthropic, open_fake_anthropic  # noqa: E402

from bus.memory import MemoryBus  # noqa: E402
from switchboard.logging import configure_logging  # noqa: E402
from switchboard.runner import start_dev  # noqa: E402
from switchboard.settings import Settings  # noqa: E402
from switchboard.twilio import open_call  # noqa: E402

TOKEN = "bench-cache-token"
QUESTIONS = (
    "Hi, I am calling about my order.",
    "It was placed last Tuesday.",
    "Can you tell me when it will arrive?",
    "And can I change the delivery address?",
    "Great, thank you very much.",
    "One more thing: do you deliver on Sundays?",
)
REPLY = ("Sure,", " let me", " check", " that", " for you.")


def _system_prompt(words: int) -> str:
    """A system prompt of about ``words`` words (a long one, as real agents have)."""
    line = "You are the voice agent of a shop; answer briefly and politely. "
    out = []
    while sum(len(s.split()) for s in out) < words:
        out.append(line)
    return "".join(out)


async def _run(cache: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One pass of every call; the per-turn waits and what the fake saw."""
    async with open_fake_anthropic(
        REPLY,
        prompt_cache=True,
        cache_min_tokens=args.cache_min_tokens,
        first_delay_s=args.ttft_ms / 1000,
        cache_hit_delay_s=args.hit_ttft_ms / 1000,
        input_tokens=0,
    ) as fake:
        # Read by the SDK's client, as in a deployment.
        os.environ["ANTHROPIC_BASE_URL"] = fake.base_url
        os.environ["ANTHROPIC_API_KEY"] = "bench-key"
        settings = Settings.from_env(
            {
                "ANTHROPIC_API_KEY": "bench-key",
                "TWILIO_AUTH_TOKEN": TOKEN,
                "SWITCHBOARD_PORT": "0",
                "SWITCHBOARD_WELCOME_GREETING": "",
                "SWITCHBOARD_SILENCE_REPROMPT_S": "0",
                "SWITCHBOARD_SYSTEM_PROMPT": _system_prompt(args.system_words),
                "SWITCHBOARD_PROMPT_CACHE": "true" if cache else "false",
                "SWITCHBOARD_LOG_LEVEL": "warning",
                "SWITCHBOARD_FILLER_AFTER_S": "0",  # the first frame is the reply's
            }
        )
        waits: list[list[float]] = [[] for _ in range(args.turns)]
        async with trio.open_nursery() as nursery:
            port = await start_dev(nursery, settings, MemoryBus())
            limit = trio.CapacityLimiter(args.concurrency)

            async def one_call() -> None:
                async with limit, open_call(f"http://127.0.0.1:{port}", auth_token=TOKEN) as call:
                    for turn in range(args.turns):
                        sent = trio.current_time()
                        await call.prompt(QUESTIONS[turn % len(QUESTIONS)])
                        first: list[float] = []

                        async def on_token(_: object, first: list[float] = first) -> None:
                            if not first:
                                first.append(trio.current_time())

                        reply = await call.reply(on_token=on_token)
                        if reply.text != "".join(REPLY):
                            raise RuntimeError(f"unexpected reply {reply.text!r}")
                        waits[turn].append((first[0] - sent) * 1000)

            async with trio.open_nursery() as calls:
                for _ in range(args.calls):
                    calls.start_soon(one_call)
            nursery.cancel_scope.cancel()
    return _report(cache, fake, waits)


def _report(cache: bool, fake: FakeAnthropic, waits: list[list[float]]) -> dict[str, Any]:
    marked = sum(1 for r in fake.requests if "cache_control" in json.dumps(r))
    return {
        "cache": cache,
        "requests": len(fake.requests),
        "requests_with_cache_control": marked,
        "cache_hits": fake.cache_hits,
        "turns": [
            {
                "turn": i + 1,
                "n": len(w),
                "p50_ms": round(statistics.median(w), 1),
                "max_ms": round(max(w), 1),
            }
            for i, w in enumerate(waits)
            if w
        ],
    }


def _table(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| prompt cache | requests | with `cache_control` | cache hits | "
        + " | ".join(f"turn {t['turn']} p50 ms" for t in reports[0]["turns"])
        + " |",
        "|" + "---|" * (4 + len(reports[0]["turns"])),
    ]
    for r in reports:
        cells = [
            "on" if r["cache"] else "off",
            str(r["requests"]),
            str(r["requests_with_cache_control"]),
            str(r["cache_hits"]),
        ]
        cells += [f"{t['p50_ms']:.1f}" for t in r["turns"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--ttft-ms", type=float, default=600.0, help="the fake's TTFT, no hit")
    parser.add_argument("--hit-ttft-ms", type=float, default=300.0, help="its TTFT on a hit")
    parser.add_argument("--cache-min-tokens", type=int, default=1024)
    parser.add_argument("--system-words", type=int, default=1500)
    parser.add_argument("--json", dest="json_out", help="write the reports here")
    args = parser.parse_args()
    configure_logging(os.environ.get("BENCH_LOG_LEVEL", "warning"))
    reports = [trio.run(_run, cache, args) for cache in (True, False)]
    sys.stdout.write(_table(reports) + "\n")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(reports, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
