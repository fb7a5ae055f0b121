"""Instant playback still reports what Twilio reports when the TwiML subscribes."""

from __future__ import annotations

from relay import Info, SendDigits, Text
from switchboard.twilio.playback import InstantPlayback


def test_a_talk_cycle_is_reported_like_twilio_does() -> None:
    playback = InstantPlayback(speaker_events=True, tokens_played=True)
    playback.say("Hi.")
    assert playback.drain() == [
        Info("agentSpeaking", "on"),
        Info("tokensPlayed", "Hi."),
        Info("agentSpeaking", "off"),
    ]
    playback.enqueue(Text("We open", last=False))
    assert playback.drain() == [Info("agentSpeaking", "on")]
    playback.enqueue(Text(" at nine.", last=False))
    playback.enqueue(Text("", last=True))
    assert playback.drain() == [
        Info("tokensPlayed", "We open at nine."),
        Info("agentSpeaking", "off"),
    ]
    playback.enqueue(SendDigits("42#"))
    assert playback.drain() == [Info("tokensPlayed", "42#")]
    assert playback.heard == ["We open", " at nine.", ""]


def test_nothing_is_reported_without_a_subscription() -> None:
    playback = InstantPlayback()
    playback.say("Hi.")
    playback.enqueue(Text("Hello.", last=True))
    assert playback.drain() == []
    only_speaker = InstantPlayback(speaker_events=True)
    only_speaker.enqueue(Text("Hello.", last=True))
    assert only_speaker.drain() == [Info("agentSpeaking", "on"), Info("agentSpeaking", "off")]
