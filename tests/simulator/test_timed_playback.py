"""The simulator's timed playback model, on its own under ``autojump_clock``."""

from __future__ import annotations

import trio
import trio.testing

from relay import Info, Text
from switchboard.twilio import TimedPlayback


async def _run(
    nursery: trio.Nursery, **options: object
) -> tuple[TimedPlayback, list[tuple[str, str]]]:
    infos: list[tuple[str, str]] = []

    async def send_info(info: Info) -> None:
        infos.append((info.name, info.value))

    playback = TimedPlayback(chars_per_s=10, send_info=send_info, **options)  # type: ignore[arg-type]
    nursery.start_soon(playback.run)
    return playback, infos


async def test_chunks_at_clause_ends_and_reports_events(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    playback, infos = await _run(nursery, speaker_events=True, tokens_played=True)
    playback.enqueue(Text("Hello there, how "))
    playback.enqueue(Text("are you today? I am"))
    playback.enqueue(Text(" fine.", last=True))
    await playback.wait_heard(3)
    await trio.testing.wait_all_tasks_blocked()
    assert playback.heard == ["Hello there,", "how are you today?", "I am fine."]
    assert infos == [
        ("agentSpeaking", "on"),
        ("tokensPlayed", "Hello there,"),
        ("tokensPlayed", "how are you today?"),
        ("tokensPlayed", "I am fine."),
        ("agentSpeaking", "off"),
    ]


async def test_nothing_is_reported_without_subscription(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    playback, infos = await _run(nursery)
    playback.say("Welcome to the bistro.")
    await playback.wait_heard(1)
    await trio.testing.wait_all_tasks_blocked()
    assert playback.heard == ["Welcome to the bistro."] and infos == []


async def test_cut_reports_whole_words_of_the_current_chunk_and_flushes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    playback, _ = await _run(nursery)
    playback.enqueue(Text("First sentence here. Sentence two of the reply. Three.", last=True))
    await playback.wait_heard(1)
    await playback.wait_into_chunk(13)  # "Sentence two " and a bit
    assert playback.cut() == ("Sentence two", 1300.0)
    assert not playback.active
    assert playback.heard == ["First sentence here.", "Sentence two"]
    assert playback.cut() is None  # nothing playing any more


async def test_uninterruptible_chunks_are_not_cut(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    playback, _ = await _run(nursery, interruptible=False)
    playback.enqueue(Text("Please hold the line.", last=True))
    await playback.wait_into_chunk(5)
    assert playback.cut() is None
    await playback.wait_heard(1)
    assert playback.heard == ["Please hold the line."]
