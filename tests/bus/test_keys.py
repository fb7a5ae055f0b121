"""Stream names: hash tags, partitions and the request/fact shards."""

from __future__ import annotations

import pytest

from bus.cluster import SLOTS, key_slot
from bus.keys import Keys, partition_of


def test_one_shard_keeps_the_unsharded_names() -> None:
    keys = Keys(namespace="sb", partitions=8)
    assert keys.llm == "sb:{llm}:requests" == keys.llm_for("CA1")
    assert keys.events == "sb:{events}" == keys.events_for("CA1")
    assert keys.llm_streams() == [keys.llm]
    assert keys.event_streams() == [keys.events]


def test_a_call_keeps_to_one_shard_and_readers_see_them_all() -> None:
    keys = Keys(namespace="sb", partitions=32, shards=4)
    calls = [f"CA{i:032x}" for i in range(200)]
    used = {keys.llm_for(c) for c in calls}
    assert used == set(keys.llm_streams())  # every shard gets calls
    assert {keys.events_for(c) for c in calls} == set(keys.event_streams())
    for call in calls:
        shard = partition_of(call, 32) % 4
        assert keys.llm_for(call) == keys.llm_shard(shard)
        assert keys.events_for(call) == keys.events_shard(shard)
    # Shard 0 is the unsharded stream: raising S keeps it in use.
    assert keys.llm_streams()[0] == Keys(namespace="sb").llm
    assert keys.event_streams()[0] == Keys(namespace="sb").events
    assert keys.events_for("") == keys.events  # facts about no call


def test_shards_spread_over_the_slots_of_a_3_master_cluster() -> None:
    keys = Keys(shards=8)
    thirds = {key_slot(s) * 3 // SLOTS for s in keys.llm_streams() + keys.event_streams()}
    assert thirds == {0, 1, 2}
    assert len({key_slot(s) for s in keys.llm_streams()}) == 8


def test_counts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Keys(shards=0)
    with pytest.raises(ValueError):
        Keys(partitions=0)
