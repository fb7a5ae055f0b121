"""The speech model behind after_speech: when may a frame that waits for speech go?

Synchronous: times are plain numbers passed in.
"""

from __future__ import annotations

import math

import pytest

from gateway.speech import REPLY_OPEN_CAP_S, SPEECH_CAP_S, TTS_STARTUP_S, SpeechModel
from switchboard.settings import Settings


def test_nothing_said_means_go_at_once() -> None:
    assert SpeechModel().release_at() == -math.inf
    assert SpeechModel(speaker_events=True).release_at() == -math.inf


def test_estimate_counts_spoken_characters_from_the_last_token() -> None:
    speech = SpeechModel(chars_per_s=10.0)
    speech.text("Hello ", False, now=100.0)
    assert speech.release_at() == 100.0 + REPLY_OPEN_CAP_S  # still open: wait for last
    speech.text(" there, friend.", True, now=101.0)
    # 5 + 14 characters (outer spaces do not count) at 10 a second, from the
    # last, and the voice's start-up lag (real calls lost a goodbye's end).
    assert speech.release_at() == pytest.approx(101.0 + TTS_STARTUP_S + 1.9)


def test_estimate_is_capped() -> None:
    speech = SpeechModel(chars_per_s=1.0)
    speech.text("x" * 1000, True, now=0.0)
    assert speech.release_at() == SPEECH_CAP_S


def test_speaker_events_wait_for_agent_speaking_off() -> None:
    speech = SpeechModel(speaker_events=True)
    speech.text("Goodbye.", True, now=10.0)
    assert speech.release_at() == 10.0 + SPEECH_CAP_S  # not heard yet: wait, capped
    assert speech.info("agentSpeaking", "on")
    assert speech.release_at() == 10.0 + SPEECH_CAP_S
    assert speech.info("agentSpeaking", "off")
    assert speech.release_at() == -math.inf
    assert not speech.info("tokensPlayed", "Goodbye.")  # other events change nothing


def test_text_sent_after_off_is_still_to_be_played() -> None:
    speech = SpeechModel(speaker_events=True)
    speech.text("One.", True, now=1.0)
    speech.info("agentSpeaking", "off")
    speech.text("Two.", True, now=2.0)
    assert speech.release_at() == 2.0 + SPEECH_CAP_S


def test_an_interrupt_leaves_nothing_to_play() -> None:
    for speech in (SpeechModel(), SpeechModel(speaker_events=True)):
        speech.text("A long answer that the caller cuts", False, now=5.0)
        speech.interrupted()
        assert speech.release_at() <= 5.0


def test_the_configured_speaking_rate_reaches_the_gateway() -> None:
    config = Settings.from_env({"SWITCHBOARD_SPEECH_CHARS_PER_S": "20"}).gateway_config()
    assert config.speech_chars_per_second == 20.0
    speech = SpeechModel(chars_per_s=config.speech_chars_per_second)
    speech.text("x" * 40, True, now=0.0)
    assert speech.release_at() == pytest.approx(TTS_STARTUP_S + 2.0)


def test_a_stale_off_falls_back_to_the_estimate() -> None:
    # The greeting's off, sent by Twilio before our reply reached it, read by
    # the gateway after the reply went out: no proof the reply was heard.
    speech = SpeechModel(speaker_events=True, chars_per_s=10.0)
    speech.info("agentSpeaking", "on")  # the greeting
    speech.text("Let me transfer you.", True, now=10.0)
    speech.info("agentSpeaking", "off")
    # 20 characters at 10/s, and the voice's start-up lag.
    assert speech.release_at() == pytest.approx(10.0 + TTS_STARTUP_S + 2.0)
    # The reply's own on/off pair is proof again.
    speech.info("agentSpeaking", "on")
    assert speech.release_at() == 10.0 + SPEECH_CAP_S
    speech.info("agentSpeaking", "off")
    assert speech.release_at() == -math.inf
