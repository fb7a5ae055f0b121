"""Twilio's side of ConversationRelay calls: for tests, ``switchboard call`` and load runs.

It behaves like Twilio and knows nothing of how the app is built: it imports
only the ``relay`` vocabulary of ours (a test checks). Modules, bottom up:

- ``errors``, ``reply``   what goes wrong; one reply as the caller got it.
- ``http``                the signed webhooks (h11).
- ``playback``            what the caller hears: instant, or timed speech.
- ``session``             one relay session: the reader, its end, the action callback.
- ``call``                ``SimulatedCall``: the caller's actions on a session.
- ``connect``             ``open_call``: webhook, TwiML, signed upgrade, ``setup``.
- ``phone``               ``switchboard call``: a terminal phone on one call.
- ``scenario``            the scenario format (the one reader) and playing one.
- ``checks``, ``results``, ``driver``, ``load``   ``switchboard simulate``'s
                          many calls at once, checked and measured.
- ``report``              tables, JSON and SVG of a load run.

The names most code needs are re-exported here.
"""

from switchboard.twilio.call import SimulatedCall, new_sid
from switchboard.twilio.connect import open_call
from switchboard.twilio.errors import HttpError, RelayConnectError, SessionClosed, SimulatorError
from switchboard.twilio.http import HttpResponse
from switchboard.twilio.playback import InstantPlayback, TimedPlayback
from switchboard.twilio.reply import Reply

__all__ = [
    "HttpError",
    "HttpResponse",
    "InstantPlayback",
    "RelayConnectError",
    "Reply",
    "SessionClosed",
    "SimulatedCall",
    "SimulatorError",
    "TimedPlayback",
    "new_sid",
    "open_call",
]
