from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.profile import ProfileError, load_profile, parse_profile

GOOD = """
[agent]
system_prompt = "You are the front desk."
greeting = "Hi there."
resume_greeting = "Sorry, we got cut off."
model = "claude-haiku-4-5"
max_tokens = 400

[voice]
language = "en-US"
tts_provider = "Amazon"
voice = "Joanna-Neural"
dtmf_detection = true
interruptible = "any"

[[voice.languages]]
code = "es-ES"
tts_provider = "Google"
voice = "es-ES-Neural2-A"

[tools]
enabled = ["end_call", "transfer"]
transfer_number = "+15551234567"

[timers]
silence_reprompt_s = 8
silence_max_reprompts = 2
dtmf_idle_s = 2.5

[dtmf.menu]
"1" = "Check an order."
"0" = "A person, please."
"""


def test_a_full_profile_parses() -> None:
    p = parse_profile(GOOD)
    assert p.system_prompt == "You are the front desk."
    assert p.max_tokens == 400
    assert p.voice["voice"] == "Joanna-Neural"
    assert p.voice["dtmf_detection"] is True
    assert [lang.code for lang in p.languages] == ["es-ES"]
    assert p.tools == ("end_call", "transfer")
    assert p.silence_reprompt_s == 8.0
    assert p.dtmf_idle_s == 2.5
    assert p.dtmf_menu == {"1": "Check an order.", "0": "A person, please."}


def test_an_empty_profile_sets_nothing() -> None:
    p = parse_profile("")
    assert p.system_prompt is None and p.tools is None and p.languages == ()


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[agnet]\nmodel = 'x'", "[agnet]"),
        ("[agent]\nmodle = 'x'", "agent.modle"),
        ("[agent]\nmax_tokens = 'many'", "agent.max_tokens"),
        ("[agent]\nmax_tokens = true", "agent.max_tokens"),
        ("[agent]\nmax_tokens = 0", "agent.max_tokens"),
        ("[voice]\ndtmf_detection = 'yes'", "voice.dtmf_detection"),
        ("[voice]\ninterruptible = 'sometimes'", "voice.interruptible"),
        ("[voice]\ntts_provider = 'Polly'", "voice.tts_provider"),
        ("[[voice.languages]]\nvoice = 'x'", "voice.languages[0].code"),
        ("[[voice.languages]]\ncode = 'fr-FR'\naccent = 'x'", "voice.languages[0].accent"),
        ("[tools]\nenabled = ['teleport']", "tools.enabled[0]"),
        ("[tools]\nenabled = ['transfer']", "tools.transfer_number"),
        ("[timers]\nsilence_reprompt_s = -1", "timers.silence_reprompt_s"),
        ("[timers]\nsilence_reprompt_s = 'soon'", "timers.silence_reprompt_s"),
        ("[dtmf.menu]\n'A' = 'x'", "dtmf.menu.A"),
        ("[agent\n", "not valid TOML"),
    ],
)
def test_errors_name_the_bad_key(text: str, names: str) -> None:
    with pytest.raises(ProfileError, match=names.replace("[", r"\[").replace("]", r"\]")):
        parse_profile(text)


def test_user_tools_are_known_when_declared() -> None:
    p = parse_profile("[tools]\nenabled = ['lookup_order']", tools=("lookup_order",))
    assert p.tools == ("lookup_order",)


def test_load_profile_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(GOOD)
    assert load_profile(path).greeting == "Hi there."
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.toml")
