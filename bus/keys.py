"""Stream and key names.

Every name starts with a namespace (``sb`` by default; tests and replays use
their own) and carries a Redis Cluster hash tag in braces, so that moving to a
cluster is a deployment change, not a data migration. A partition's stream,
lease, epoch and call states share one tag (one slot).
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
        """Completion requests, read by the ``llm`` group."""
        return f"{self.namespace}:{{llm}}:requests"

    def gateway(self, gateway_id: str) -> str:
        """Everything addressed to one gateway process (tokens, commands)."""
        return f"{self.namespace}:{{gw:{gateway_id}}}:out"

    @property
    def control(self) -> str:
        """Broadcast control messages (cancel a generation), tail-read by all."""
        return f"{self.namespace}:{{control}}"

    @property
    def events(self) -> str:
        """Facts every actor publishes for telemetry and plug-ins."""
        return f"{self.namespace}:{{events}}"
