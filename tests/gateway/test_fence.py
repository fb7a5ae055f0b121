"""The reply fence, clause by clause: no socket, no bus, no clock."""

from __future__ import annotations

from actors.llm.resume import forwarded
from bus.messages import LlmTokens
from gateway.fence import (
    MAX_HELD_BATCHES,
    MAX_HELD_REPLIES,
    Admission,
    HeldBatch,
    ReplyFence,
)


def test_a_final_prompt_or_interrupt_fences_every_older_reply() -> None:
    fence = ReplyFence("VX1")
    assert fence.admit(reply_to=2, index=0) is Admission.SEND
    fence.forwarded(2, 0)
    fence.caller_event(3, cuts_reply=False)  # an interim prompt, a key, an info
    assert fence.admit(2, 1) is Admission.SEND
    fence.caller_event(5, cuts_reply=True)  # the caller spoke again or barged in
    assert fence.admit(2, 1) is Admission.FENCED
    assert fence.admit(4, 0) is Admission.FENCED  # answers an older prompt
    assert fence.admit(5, 0) is Admission.SEND  # answers the prompt at the fence


def test_a_reply_withdrawn_after_the_apology_is_never_sent() -> None:
    fence = ReplyFence("VX1")
    fence.caller_event(5, cuts_reply=True)  # the final prompt the apology is for
    assert fence.admit(5, 0) is Admission.SEND
    fence.withdraw(5)
    # Its late reply, and any older one: dropped, at admission and at write time.
    assert fence.admit(5, 0) is Admission.FENCED
    assert fence.admit(3, 2) is Admission.FENCED
    assert not fence.still_current(5)
    # A held reply adopted for it would not play either.
    assert fence.adopt(4, 5) is None
    # The caller says it again: that reply plays.
    fence.caller_event(6, cuts_reply=False)  # an info frame
    fence.caller_event(8, cuts_reply=True)
    assert fence.admit(8, 0) is Admission.SEND and fence.still_current(8)
    fence.withdraw(5)  # a stale withdrawal never fences a newer reply
    assert fence.admit(8, 1) is Admission.SEND


def test_a_batch_is_sent_once_per_reply() -> None:
    fence = ReplyFence("VX1")
    assert fence.is_first(2)
    fence.forwarded(2, 0)
    assert not fence.is_first(2)
    fence.forwarded(2, 1)
    # A redelivered or regenerated batch is not spoken twice...
    assert fence.admit(2, 0) is Admission.DUPLICATE
    assert fence.admit(2, 1) is Admission.DUPLICATE
    assert fence.admit(2, 2) is Admission.SEND
    # ... and another reply keeps its own count.
    assert fence.admit(7, 0) is Admission.SEND


def test_only_admitted_batches_count() -> None:
    # A batch that could not be queued (outbox full) may come again.
    fence = ReplyFence("VX1")
    assert fence.admit(2, 0) is Admission.SEND
    assert fence.admit(2, 0) is Admission.SEND
    assert fence.is_first(2)


def test_queued_tokens_are_fenced_again_at_write_time() -> None:
    fence = ReplyFence("VX1")
    fence.forwarded(2, 0)
    assert fence.still_current(2)
    fence.caller_event(4, cuts_reply=True)
    assert not fence.still_current(2)
    assert fence.still_current(4)
    # The fenced reply's count is forgotten; the fence alone keeps it out.
    assert fence.is_first(2) and fence.admit(2, 5) is Admission.FENCED


def test_frames_are_for_the_live_session() -> None:
    fence = ReplyFence("VX2")
    assert fence.admits_session("VX2", strict=True)
    assert not fence.admits_session("VX1", strict=True)  # the failed session's reply
    assert not fence.admits_session("", strict=True)  # tokens always name theirs
    assert fence.admits_session("", strict=False)  # a frame for the call, whichever session
    assert not fence.admits_session("VX1", strict=False)


def test_nothing_of_a_reply_passes_after_its_last_batch() -> None:
    # Worker A coalesced the reply into 3 batches, worker B (which reclaimed the
    # request from a stalled A) into 6: B's indices 3..5 are above A's last.
    fence = ReplyFence("VX1")
    for index in range(3):
        assert fence.admit(4, index) is Admission.SEND
        fence.forwarded(4, index, last=index == 2)
    assert [fence.admit(4, i) for i in range(6)] == [Admission.AFTER_LAST] * 6
    # Another reply is not affected, and the next caller turn forgets reply 4.
    assert fence.admit(5, 0) is Admission.SEND
    fence.caller_event(6, cuts_reply=True)
    assert fence.admit(4, 9) is Admission.FENCED
    assert fence._finished == set()


def test_once_a_newer_generation_opens_an_older_one_is_not_forwarded() -> None:
    fence = ReplyFence("VX1")
    for index in range(3):  # the first attempt (generation 0)
        assert fence.admit(2, index) is Admission.SEND
        fence.forwarded(2, index)
    # A resuming attempt opens generation 7 and continues at index 3.
    assert fence.admit(2, -1, generation=7) is Admission.OPENED
    assert fence.admit(2, 3) is Admission.STALE_GENERATION  # the stalled one woke
    assert fence.admit(2, 9) is Admission.STALE_GENERATION
    assert fence.admit(2, 3, generation=7) is Admission.SEND
    fence.forwarded(2, 3)
    assert fence.admit(2, 3, generation=7) is Admission.DUPLICATE
    # An opening below the newest opens nothing; another reply is apart.
    assert fence.admit(2, -1, generation=5) is Admission.STALE_GENERATION
    assert fence.admit(4, 0) is Admission.SEND


def test_generations_are_forgotten_with_the_fenced_reply() -> None:
    fence = ReplyFence("VX1")
    assert fence.admit(2, -1, generation=7) is Admission.OPENED
    fence.caller_event(3, cuts_reply=True)
    assert fence.admit(2, 0, generation=7) is Admission.FENCED
    assert fence.admit(3, 0) is Admission.SEND


def test_the_resuming_worker_reads_back_what_the_fence_forwarded() -> None:
    """``actors.llm.resume.forwarded`` folds a reply's batches with this rule."""
    batches = [
        LlmTokens("Hello", 0, False, 2),
        LlmTokens(" there", 1, False, 2),
        LlmTokens("", -1, False, 2, generation=5),  # an attempt resumes...
        LlmTokens(" you", 2, False, 2),  # ...the first one's late batch: stale
        LlmTokens(" friend", 2, False, 2, generation=5),
        LlmTokens(" again", 1, False, 2, generation=5),  # a repeat
        LlmTokens("", -1, False, 2, generation=3),  # a late, older opening
    ]
    fence = ReplyFence("VX1")
    sent = []
    for b in batches:
        if fence.admit(b.reply_to, b.index, b.generation) is Admission.SEND:
            fence.forwarded(b.reply_to, b.index, last=b.last)
            sent.append(b.text)
    folded = forwarded(batches)
    assert folded.text == "".join(sent) == "Hello there friend"
    assert folded.next_index == 3 and folded.newest_seen == 5 and not folded.finished


# -- held (speculative) replies: rule 6 ----------------------------------------


def _hold(fence: ReplyFence, reply_to: int, index: int, text: str, *, last: bool = False) -> None:
    assert fence.admit(reply_to, index, held=True) is Admission.HOLD
    assert fence.keep(reply_to, HeldBatch(index, text, last, turn=1))


def test_a_held_reply_is_kept_past_the_final_prompt_and_released_on_adoption() -> None:
    fence = ReplyFence("VX1")
    _hold(fence, 4, 0, "Sure,")  # answers the interim prompt 4
    fence.caller_event(6, cuts_reply=True)  # the final prompt 6: still kept
    _hold(fence, 4, 1, " two.")
    assert fence.admit(4, 1, held=True) is Admission.DUPLICATE
    kept = fence.adopt(4, 6)
    assert [b.text for b in kept or []] == ["Sure,", " two."]
    # From now on the reply is the answer to 6: fenced, de-duplicated as such.
    assert fence.answers(4) == 6
    for batch in kept or []:
        assert fence.admit(4, batch.index) is Admission.SEND
        fence.forwarded(4, batch.index)
    assert fence.admit(4, 2, held=True) is Admission.SEND  # later batches pass at once
    assert fence.admit(4, 1, held=True) is Admission.DUPLICATE
    assert fence.still_current(fence.answers(4)) and fence.still_current(4)
    fence.caller_event(9, cuts_reply=True)  # the caller speaks again
    assert fence.admit(4, 3, held=True) is Admission.FENCED
    assert not fence.still_current(4)


def test_a_held_reply_never_plays_without_its_adoption() -> None:
    fence = ReplyFence("VX1")
    _hold(fence, 4, 0, "Ten?")
    fence.caller_event(6, cuts_reply=True)
    # The final's own reply starts: the held one is dropped, never released.
    assert fence.admit(6, 0) is Admission.SEND
    fence.forwarded(6, 0)
    assert fence.adopt(4, 6) == []  # nothing left to release...
    assert fence._held == {}


def test_an_adoption_after_a_newer_cut_is_refused() -> None:
    for later in ({"cuts_reply": True}, {"cuts_reply": True, "interrupt": True}):
        fence = ReplyFence("VX1")
        _hold(fence, 4, 0, "Sure.", last=True)
        fence.caller_event(6, cuts_reply=True)
        fence.caller_event(8, **later)  # a newer final prompt, or a barge-in
        assert fence.adopt(4, 6) is None
        assert fence.admit(4, 1, held=True) is not Admission.SEND


def test_an_interrupt_drops_every_held_reply_older_than_it() -> None:
    fence = ReplyFence("VX1")
    _hold(fence, 4, 0, "Sure.")
    fence.caller_event(5, cuts_reply=True, interrupt=True)
    assert fence._held == {}
    assert fence.admit(4, 1, held=True) is Admission.FENCED  # and any that comes later
    assert fence.adopt(4, 7) is None
    _hold(fence, 6, 0, "Yes.")  # a speculation after the barge-in is kept


def test_held_replies_are_bounded() -> None:
    fence = ReplyFence("VX1")
    for reply_to in range(1, MAX_HELD_REPLIES + 2):
        _hold(fence, reply_to, 0, "x")
    assert sorted(fence._held) == list(range(2, MAX_HELD_REPLIES + 2))  # the oldest went
    for index in range(1, MAX_HELD_BATCHES):
        _hold(fence, 3, index, "y")
    assert fence.admit(3, MAX_HELD_BATCHES, held=True) is Admission.HOLD
    assert not fence.keep(3, HeldBatch(MAX_HELD_BATCHES, "z", False, 1))
    # Dropped whole (a release with a gap would be garbled), for good.
    assert 3 not in fence._held and fence.admit(3, 0, held=True) is Admission.FENCED
    fence.caller_event(9, cuts_reply=True)
    assert fence.adopt(3, 9) is None


def test_a_resumed_held_reply_continues_what_was_kept() -> None:
    # Generation 0 kept two batches; a resuming attempt opens generation 7
    # (its opening is not marked held, and comes after the final prompt) and
    # continues from them; the stalled first attempt's late batch is stale.
    fence = ReplyFence("VX1")
    batches = [
        LlmTokens("Sure,", 0, False, 4, held=True),
        LlmTokens(" two", 1, False, 4, held=True),
        LlmTokens("", LlmTokens.OPENING, False, 4, generation=7),
        LlmTokens(" tables", 2, False, 4, held=True),  # the first attempt, late
        LlmTokens(" at", 2, False, 4, generation=7, held=True),
        LlmTokens(" six.", 3, True, 4, generation=7, held=True),
    ]
    admissions = []
    for n, b in enumerate(batches):
        if n == 2:
            fence.caller_event(6, cuts_reply=True)
        admission = fence.admit(b.reply_to, b.index, b.generation, held=b.held)
        admissions.append(admission)
        if admission is Admission.HOLD:
            fence.keep(4, HeldBatch(b.index, b.text, b.last, turn=1))
    assert Admission.STALE_GENERATION in admissions and Admission.OPENED in admissions
    kept = fence.adopt(4, 6)
    assert "".join(b.text for b in kept or []) == "Sure, two at six."
    # The resuming attempt folded the same text from the stream before its opening.
    assert forwarded(batches[:2]).text == "Sure, two"
