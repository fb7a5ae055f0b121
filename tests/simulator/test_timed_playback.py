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


async def _gated(
    nursery: trio.Nursery, gated: tuple[str, str]
) -> tuple[TimedPlayback, trio.Event, trio.Event]:
    """Timed playback whose ``gated`` info event is slow to send (a loaded machine,
    a busy socket): returns it, the event set when that send starts, and the
    event that lets the send finish."""
    sending, release = trio.Event(), trio.Event()

    async def send_info(info: Info) -> None:
        if (info.name, info.value) == gated:
            sending.set()
            await release.wait()

    playback = TimedPlayback(chars_per_s=10, send_info=send_info, speaker_events=True)
    nursery.start_soon(playback.run)
    return playback, sending, release


async def test_text_queued_while_agent_speaking_off_is_sent_still_plays(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    playback, sending, release = await _gated(nursery, ("agentSpeaking", "off"))
    playback.say("Hi.")
    await sending.wait()  # the greeting is over; its "off" is on its way
    playback.enqueue(Text("The reply, queued meanwhile.", last=True))
    release.set()
    with trio.fail_after(60):  # virtual seconds: the reply takes 2.8
        await playback.wait_heard(2)
    assert playback.heard == ["Hi.", "The reply, queued meanwhile."]


async def test_a_barge_in_while_agent_speaking_on_is_sent_drops_the_chunk(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    playback, sending, release = await _gated(nursery, ("agentSpeaking", "on"))
    playback.enqueue(Text("Nobody hears this.", last=True))
    await sending.wait()  # the chunk is taken from the queue, not playing yet
    playback.flush()  # the caller talked over it
    release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert not playback.active
    await trio.sleep(10)  # virtual: longer than the chunk would have played
    assert playback.heard == [] and not playback.active
