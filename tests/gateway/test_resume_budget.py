"""The resume budget: transient failures only, counted in the bus so gateways agree."""

from __future__ import annotations

import pytest
import trio

from bus.base import Bus
from bus.keys import Keys
from gateway.resume import LocalResumes, claim_resume, is_transient

CALL = "CA0000000000000000000000000000000r"


@pytest.mark.parametrize(
    ("code", "transient"),
    [("64105", True), ("64114", True), ("39001", True), (" 64105 ", True),
     ("64101", False), ("64102", False), ("64106", False), ("64108", False), ("", True),
     (None, True)],
)  # fmt: skip
def test_only_transient_failures_are_worth_a_reconnect(code: str | None, transient: bool) -> None:
    assert is_transient(code) is transient


async def test_a_call_gets_at_most_limit_resumes_whichever_gateway_asks(bus: Bus) -> None:
    keys = Keys(namespace="t-resume", partitions=4)
    with trio.fail_after(10):
        assert await claim_resume(bus, keys, CALL, "VX1", 2) == 1
        assert await claim_resume(bus, keys, CALL, "VX2", 2) == 2
        assert await claim_resume(bus, keys, CALL, "VX3", 2) is None
        # A retried callback for a session already counted: the same answer.
        assert await claim_resume(bus, keys, CALL, "VX2", 2) == 2
        # Other calls have their own budget.
        assert await claim_resume(bus, keys, CALL + "x", "VX9", 2) == 1


async def test_concurrent_claims_never_share_a_slot(bus: Bus) -> None:
    keys = Keys(namespace="t-resume-race", partitions=4)
    got: dict[str, int | None] = {}

    async def claim(session: str) -> None:
        got[session] = await claim_resume(bus, keys, CALL, session, 3)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(claim, f"VX{n}")
    numbers = sorted(n for n in got.values() if n is not None)
    assert numbers == [1, 2, 3]


def test_without_the_bus_a_gateway_still_bounds_each_calls_resumes() -> None:
    # A Redis restart: every resumed session fails at once while it is down.
    local = LocalResumes()
    storm = [local.claim(CALL, f"VX{n}", 2) for n in range(25)]
    assert storm[:2] == [1, 2]
    assert storm[2:] == [None] * 23
    assert local.claim(CALL, "VX1", 2) == 2  # a retried callback: the same answer
    assert local.claim(CALL + "x", "VX9", 2) == 1  # other calls have their own budget


def test_the_local_budget_forgets_the_oldest_calls_first() -> None:
    local = LocalResumes(capacity=2)
    local.claim("CA1", "VX1", 1)
    local.claim("CA2", "VX2", 1)
    local.claim("CA3", "VX3", 1)
    assert local.claim("CA1", "VX4", 1) == 1  # forgotten: a fresh budget, still bounded
    assert local.claim("CA3", "VX5", 1) is None
