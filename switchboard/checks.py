"""Is a reply what the scripted provider answers? The content check of a load run.

It knows the scripted provider (``actors.providers.scripted``), so it lives in
the composition root, not on Twilio's side: ``switchboard.simulate`` hands it
to the load run when the run's ``content`` is ``scripted``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Final

from actors.config import DEFAULT_FILLER_TEXT
from actors.providers.scripted import TOOL_LEAD_IN, scripted_tool_use

_SCRIPTED: Final = re.compile(
    r"You said: (?P<said>.*)\. That was message (?P<n>\d+) from you\.", re.DOTALL
)


_BUILT_IN_TOOLS = [{"name": name} for name in TOOL_LEAD_IN]


def check_scripted_reply(
    prompt: str, reply: str, *, complete: bool = True, filler: str = DEFAULT_FILLER_TEXT
) -> str | None:
    """None if ``reply`` is what the scripted provider answers to ``prompt``, else
    the kind of fault: ``fenced`` (another turn's tokens first), ``misordered``
    (the right words in the wrong order) or ``lost`` (words missing or extra).

    The conversation may join an unanswered prompt with the next one, so the
    echoed words need only *end* with ``prompt``. An interrupted reply
    (``complete=False``) must be a prefix of such a reply. A late reply is
    preceded by the ``filler`` line (the LLM actor's own frame, on the same
    socket): it belongs to this turn, before the reply, never inside it.
    """
    lead = f"{filler.strip()} " if filler.strip() else ""
    if lead and reply.startswith(lead):
        reply = reply[len(lead) :]
    elif lead and not complete and lead.startswith(reply):
        return None  # interrupted during the filler line
    said = prompt.strip().rstrip(".!?").strip() or "nothing"
    if not complete:
        expected_start = "You said: "
        if reply.startswith(expected_start) or expected_start.startswith(reply):
            return None
        return "fenced" if expected_start in reply else "lost"
    match = _SCRIPTED.fullmatch(reply)
    if match is not None and match["said"].endswith(said):
        return None
    # Words that ask for a tool (when the agent has it) get its lead-in instead.
    tool = scripted_tool_use([{"role": "user", "content": prompt}], _BUILT_IN_TOOLS)
    if tool is not None and reply.startswith(TOOL_LEAD_IN[tool[0]]):
        return None
    if match is None and _SCRIPTED.search(reply) is not None:
        found = _SCRIPTED.search(reply)
        assert found is not None
        if found.start() > 0 and found["said"].endswith(said):
            return "fenced"
    number = re.search(r"message (\d+) from", reply)
    expected = f"You said: {said}. That was message {number[1] if number else 1} from you."
    if Counter(re.findall(r"\w+", reply)) == Counter(re.findall(r"\w+", expected)):
        return "misordered"
    return "lost"
