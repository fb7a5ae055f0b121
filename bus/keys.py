"""Stream and key names.

Every name starts with a namespace (``sb`` by default; tests and replays use
their own) and carries a Redis Cluster hash tag in braces, so that moving to a
cluster is a deployment change, not a data migration. A partition's stream,
lease, epoch and call states share one tag (one slot).

The two busiest streams that are not per partition, completion requests and
facts, come in ``shards`` (S) streams each, so that on a cluster no single
slot carries every request or every fact. A call's entries always go to one
shard (``shard_of``: the call's partition mod S, so per-call order holds);
readers read every shard. Shard 0 keeps the unsharded name (``{llm}``,
``{events}``): going from S=1 to more keeps the existing stream in use.
docs/OPERATIONS.md says how to change S on a running deployment.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

# Consumer group names, one per actor role.
GROUP_CONVERSATION = "conversation"
GROUP_LLM = "llm"
GROUP_TELEMETRY = "telemetry"


def partition_of(call_sid: str, partitions: int) -> int:
    """The partition a call lives on: a stable hash, never Python's ``hash()``."""
    return zlib.crc32(call_sid.encode()) % partitions


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds every name for one namespace and partition count."""

    namespace: str = "sb"
    partitions: int = 32
    shards: int = 1

    def __post_init__(self) -> None:
        if self.partitions < 1 or self.shards < 1:
            raise ValueError("partitions and shards must be at least 1")

    def shard_of(self, call_sid: str) -> int:
        """The request and fact shard of a call (its partition mod the shard count)."""
        return partition_of(call_sid, self.partitions) % self.shards

    def _sharded(self, tag: str, shard: int, suffix: str) -> str:
        name = tag if shard == 0 else f"{tag}:{shard}"
        return f"{self.namespace}:{{{name}}}{suffix}"

    def calls(self, partition: int) -> str:
        """Inbound stream of a partition: caller events and LLM results."""
        return f"{self.namespace}:{{p{partition}}}:calls"

    def calls_for(self, call_sid: str) -> str:
        return self.calls(partition_of(call_sid, self.partitions))

    def all_calls(self) -> list[str]:
        return [self.calls(p) for p in range(self.partitions)]

    def state(self, call_sid: str) -> str:
        """Conversation state of a call (same slot as its partition)."""
        p = partition_of(call_sid, self.partitions)
        return f"{self.namespace}:{{p{p}}}:state:{call_sid}"

    def filler(self, call_sid: str) -> str:
        """The turn of a call that last had the filler line (``actors/llm/generate.py``)."""
        p = partition_of(call_sid, self.partitions)
        return f"{self.namespace}:{{p{p}}}:filler:{call_sid}"

    def resume(self, call_sid: str, n: int) -> str:
        """Slot ``n`` of a call's resumes after failed sessions (``gateway/resume.py``)."""
        p = partition_of(call_sid, self.partitions)
        return f"{self.namespace}:{{p{p}}}:resume:{call_sid}:{n}"

    def generation(self, call_sid: str, session: str, reply_to: int) -> str:
        """The newest generation opened for a reply (``actors/llm/resume.py``)."""
        p = partition_of(call_sid, self.partitions)
        return f"{self.namespace}:{{p{p}}}:generation:{call_sid}:{session}:{reply_to}"

    def timers(self, partition: int) -> str:
        """Pending conversation timers of a partition's calls (same slot as its stream).

        A JSON object ``{call_sid: {timer_name: deadline_ms}}`` kept by the
        partition's owner, so a new owner re-arms the timers (failover).
        """
        return f"{self.namespace}:{{p{partition}}}:timers"

    def lease(self, partition: int) -> str:
        """Ownership lease of a partition (its epoch key is ``<lease>:epoch``)."""
        return f"{self.namespace}:{{p{partition}}}:lease"

    def members(self, group: str) -> str:
        """Liveness registry of the workers of one role (``Bus.heartbeat``)."""
        return f"{self.namespace}:{{members:{group}}}"

    @property
    def llm(self) -> str:
        """Completion requests of shard 0 (with one shard: all of them)."""
        return self.llm_shard(0)

    def llm_shard(self, shard: int) -> str:
        """Completion requests of one shard, read by the ``llm`` group."""
        return self._sharded("llm", shard, ":requests")

    def llm_for(self, call_sid: str) -> str:
        """Where a call's completion requests go."""
        return self.llm_shard(self.shard_of(call_sid))

    def llm_streams(self) -> list[str]:
        """Every request stream: what the ``llm`` group reads."""
        return [self.llm_shard(s) for s in range(self.shards)]

    def gateway(self, gateway_id: str) -> str:
        """Everything addressed to one gateway process (tokens, commands)."""
        return f"{self.namespace}:{{gw:{gateway_id}}}:out"

    @property
    def control(self) -> str:
        """Broadcast control messages (cancel a generation), tail-read by all."""
        return f"{self.namespace}:{{control}}"

    @property
    def events(self) -> str:
        """Facts of shard 0 (with one shard: all of them)."""
        return self.events_shard(0)

    def events_shard(self, shard: int) -> str:
        """Facts of one shard, published by every actor."""
        return self._sharded("events", shard, "")

    def events_for(self, call_sid: str) -> str:
        """Where facts about a call go (facts about no call: shard 0)."""
        return self.events_shard(self.shard_of(call_sid) if call_sid else 0)

    def event_streams(self) -> list[str]:
        """Every fact stream: what telemetry and plug-ins read."""
        return [self.events_shard(s) for s in range(self.shards)]
