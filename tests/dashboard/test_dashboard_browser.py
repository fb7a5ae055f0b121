"""The dashboard in a real browser: headless Chromium watches a simulated call.

The page is loaded before the call exists; the test then places the call
with the Twilio-side simulator and checks, in the browser, that the call
appears live, its transcript grows while the reply streams, a barge-in is
shown (heard and cut), a tool call and key presses are marked, and the
replay timeline and turn latency open; a silence re-prompt is marked too. Every wait is for
something on the page or on the call, never for time. Screenshots are kept
under ``tests/artifacts/dashboard/``.
"""

from __future__ import annotations

import pytest
import trio
from browser import open_browser
from dashkit import running_dev

from relay import Text
from switchboard.settings import Settings
from switchboard.twilio import open_call

# A browser and a whole dev composition: one at a time, with the other process tests.
pytestmark = [pytest.mark.browser, pytest.mark.system]

LONG = (
    "I would like to know whether the restaurant on the corner of the market square "
    "is open this evening and whether it has a table by the window for four people"
)


async def test_a_simulated_call_seen_live_in_the_browser() -> None:
    # A slow scripted model (a word every 60 ms) so the reply is seen mid-stream.
    with trio.fail_after(90):
        async with (
            running_dev(
                SWITCHBOARD_SCRIPTED_TOKEN_GAP_MS="60", SWITCHBOARD_TOOLS="send_digits"
            ) as (port, _bus),
            open_browser() as browser,
        ):
            await browser.do(lambda page: page.goto(f"http://127.0.0.1:{port}/dashboard"))
            await browser.do(lambda page: page.locator("#conn", has_text="live").wait_for())
            async with open_call(f"http://127.0.0.1:{port}", from_="+15550123") as call:
                sid = call.call_sid
                row = f'li.call-row.open[data-call="{sid}"]'
                # The call appears among the open calls without a reload.
                await browser.do(lambda page: page.locator(row).wait_for())
                await browser.do(lambda page: page.locator(row).click())

                await call.prompt(LONG)
                streaming = "#transcript li.item.agent:has(.streaming)"
                partial = await browser.do(
                    lambda page: page.locator(streaming).first.inner_text(timeout=20_000)
                )
                await browser.screenshot("streaming")
                reply = await call.reply()
                finished = "#transcript li.item.agent:not(:has(.streaming))"
                final = await browser.do(lambda page: page.locator(finished).last.inner_text())
                assert reply.text in final
                # Seen before the reply was complete: only part of it.
                assert "from you" not in partial and len(partial) < len(final)

                # Three chunks of the next reply arrive; the caller heard two, then
                # talks over the agent (as Twilio reports it: the words heard).
                await call.prompt("Please repeat everything you just said word for word.")
                chunks: list[str] = []
                while len(chunks) < 3:
                    msg = await call.next_message()
                    if isinstance(msg, Text):
                        chunks.append(msg.token)
                heard = "".join(chunks[:2]).strip()
                await call.interrupt(heard, 700.0)
                await call.prompt("Stop, thanks.")
                await call.reply()
                barge = "#transcript li.item.bargein"
                await browser.do(lambda page: page.locator(f"{barge} .cut").wait_for())
                shown = await browser.do(lambda page: page.locator(f"{barge} .heard").inner_text())
                assert shown == heard
                cut = await browser.do(lambda page: page.locator(f"{barge} .cut").inner_text())
                assert chunks[2].strip() in cut
                await browser.screenshot("barge-in")

                # A tool call and key presses are marked as such.
                await call.prompt("Please press 1 2 3 for me.")
                await call.reply()
                await call.dtmf("4")
                await call.dtmf("#")
                await call.reply()
                tool = "#transcript li.item.tool"
                await browser.do(lambda page: page.locator(tool, has_text="send_digits").wait_for())
                digits = "#transcript li.item.dtmf .text"
                await browser.do(lambda page: page.locator(digits, has_text="#").wait_for())
                keys = await browser.do(lambda page: page.locator(digits).all_inner_texts())
                assert keys == ["4", "#"]

            # The call is over: it moves to the recent calls.
            done = f'#recent-calls li.call-row[data-call="{sid}"]'
            await browser.do(lambda page: page.locator(done).wait_for())

            await browser.do(lambda page: page.get_by_role("tab", name="Replay timeline").click())
            rows = "#timeline tbody tr"
            await browser.do(lambda page: page.locator(rows, has_text="call.setup").wait_for())
            count = await browser.do(lambda page: page.locator(rows).count())
            assert count > 10
            await browser.do(lambda page: page.get_by_role("tab", name="Turn latency").click())
            await browser.do(lambda page: page.locator("#turns tbody tr .seg").first.wait_for())
            await browser.do(lambda page: page.get_by_role("tab", name="Transcript").click())
            await browser.screenshot("call")


async def test_a_silence_re_prompt_is_marked_in_the_browser() -> None:
    # A short greeting and re-prompt delay: a caller who says nothing is re-prompted.
    reprompt = Settings.from_env({}).reprompt_text
    with trio.fail_after(60):
        async with (
            running_dev(
                SWITCHBOARD_WELCOME_GREETING="Hi.",
                SWITCHBOARD_SILENCE_REPROMPT_S="0.2",
                SWITCHBOARD_SILENCE_MAX_REPROMPTS="1",
            ) as (port, _bus),
            open_browser() as browser,
        ):
            await browser.do(lambda page: page.goto(f"http://127.0.0.1:{port}/dashboard"))
            await browser.do(lambda page: page.locator("#conn", has_text="live").wait_for())
            async with open_call(f"http://127.0.0.1:{port}") as call:
                row = f'li.call-row[data-call="{call.call_sid}"]'
                await browser.do(lambda page: page.locator(row).click())
                heard = await call.reply()  # the caller stays silent and is re-prompted
                assert heard.text == reprompt
                marked = "#transcript li.item.reprompt"
                await browser.do(lambda page: page.locator(marked, has_text=reprompt).wait_for())
                badge = await browser.do(lambda page: page.locator(f"{marked} .badge").inner_text())
                assert badge == "re-prompt"
