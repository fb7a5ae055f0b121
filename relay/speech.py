"""How fast the agent's words are spoken: the one estimate speech is timed by.

Without speaker events (``info agentSpeaking``) and ``tokensPlayed``, nobody
is told how long a reply takes to say, so three parts estimate it from the
text's length at one rate: the gateway (when an ``after_speech`` frame such as
a goodbye's ``end`` may go), the conversation (when the caller has had time
to answer; how much of a cut reply a ``durationUntilInterruptMs`` covers) and
the simulator (how long Twilio's side plays a reply).

The default is a typical conversational TTS pace, about 150 words a minute
(14 characters a second); a deployment whose voice is faster or slower sets
``SWITCHBOARD_SPEECH_CHARS_PER_S``, which reaches every user of the rate.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CHARS_PER_SECOND"]

CHARS_PER_SECOND: Final = 14.0
