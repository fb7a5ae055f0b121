"""The speech model: when has the agent finished speaking on one session?

Pure (times are passed in; the gateway uses ``trio.current_time()``). It
decides when an ``after_speech`` frame (a goodbye's ``end``, say) may go.

- With speaker events subscribed (the TwiML ``events`` or ``debug``
  attribute names ``speaker-events``; ``events`` does by default), speech
  is over at the ``info agentSpeaking off`` after the last text sent,
  provided an ``on`` came after that text: an ``off`` without one may be
  stale (Twilio sent it for the greeting before our text reached it, and the
  gateway read it late), so the estimate decides then, unless the reply's
  own ``on``/``off`` pair comes first.
- Otherwise it is estimated: the characters sent since the reply began (or
  since the last ``agentSpeaking on``) at ``chars_per_s`` (the deployment's
  speaking rate, :mod:`relay.speech`) plus ``TTS_STARTUP_S`` for the voice
  to catch up, counted from the moment the reply's ``last: true`` was
  forwarded.

Either way a waiting frame goes at the latest ``SPEECH_CAP_S`` after the reply
ended (a lost ``off`` must not keep a goodbye from ever ending the call), and a
reply that never sends ``last: true`` stops holding frames back
``REPLY_OPEN_CAP_S`` after it began. An interrupt flushes Twilio's queue:
nothing is left to play.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from relay.speech import CHARS_PER_SECOND

__all__ = ["REPLY_OPEN_CAP_S", "SPEECH_CAP_S", "TTS_STARTUP_S", "SpeechModel"]

SPEECH_CAP_S: Final = 15.0  # bound on any after_speech wait once the reply has ended
REPLY_OPEN_CAP_S: Final = 60.0  # a reply that never sends last:true stops blocking after this
# Without speaker events: how much later than the text arrives the voice
# lags (TTS start-up and the last chunk's synthesis). Recordings of real
# calls (docs/PROTOCOL-REFERENCE.md) had the estimate's end go out 0.3-0.9 s
# before playback ended, cutting the goodbye's last words.
TTS_STARTUP_S: Final = 1.0


@dataclass(eq=False, slots=True)
class SpeechModel:
    """What the gateway knows about the agent's speech on one session."""

    speaker_events: bool = False  # the session reports agentSpeaking on/off
    chars_per_s: float = CHARS_PER_SECOND  # the configured rate, per session
    speaking: bool = False  # last agentSpeaking value seen
    reply_open: bool = False  # text forwarded, its ``last: true`` not yet
    chars: int = 0  # characters sent since the reply began / last ``on``
    unplayed: int = 0  # characters sent since the last ``off`` (speaker events)
    on_since_text: bool = True  # an ``on`` came after the oldest unplayed text
    doubtful_off: bool = False  # an ``off`` came without one: maybe stale
    ended_at: float = -math.inf  # when the last reply's ``last: true`` went out
    opened_at: float = -math.inf  # when the open reply's first text went out

    def text(self, token: str, last: bool, now: float) -> None:
        """A ``text`` frame went to the socket's queue at ``now``."""
        if not self.reply_open:
            self.reply_open = True
            self.opened_at = now
            self.chars = 0
        spoken = len(token.strip())
        if spoken and (self.unplayed == 0 or self.doubtful_off):
            # New text after a doubtful off: its own on/off pair will tell.
            self.on_since_text = False
            self.doubtful_off = False
        self.chars += spoken
        self.unplayed += spoken
        if last:
            self.reply_open = False
            self.ended_at = now

    def info(self, name: str, value: str) -> bool:
        """An ``info`` event from Twilio; True when it changed the model."""
        if name != "agentSpeaking":
            return False
        if value == "on":
            self.speaking = True
            self.on_since_text = True
            self.doubtful_off = False
            self.chars = 0
        elif value == "off":
            self.speaking = False
            if self.on_since_text:
                self.unplayed = 0
            else:
                self.doubtful_off = True
        return True

    def interrupted(self) -> None:
        """The caller barged in: Twilio flushed its queue, nothing is left to play."""
        self.speaking = False
        self.reply_open = False
        self.on_since_text = True
        self.doubtful_off = False
        self.chars = self.unplayed = 0

    def release_at(self) -> float:
        """The time at which an after_speech frame may go, unless something
        changes first (then ask again). ``-inf``: at once."""
        if self.reply_open:
            return self.opened_at + REPLY_OPEN_CAP_S
        cap = self.ended_at + SPEECH_CAP_S
        if self.speaker_events and not self.doubtful_off:
            if not self.speaking and self.unplayed == 0:
                return -math.inf
            return cap
        speaking_s = TTS_STARTUP_S + self.chars / self.chars_per_s if self.chars else 0.0
        estimate = self.ended_at + min(speaking_s, SPEECH_CAP_S)
        return min(estimate, cap)
