"""The bus's settings: where Redis is, how the key space is cut, how long entries live."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import TypedDict

from bus.replicated import DEFAULT_WAIT_REPLICAS, DEFAULT_WAIT_TIMEOUT_MS, WaitPolicy
from bus.trim import (
    DEFAULT_KEEP_ALIVE_TTL_S,
    DEFAULT_STREAM_MAX_LEN,
    DEFAULT_TRIM_INTERVAL_S,
    TrimPolicy,
)
from switchboard.environment.parse import integer, number, url

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


class BusSettings(TypedDict):
    redis_url: str
    namespace: str
    partitions: int
    stream_shards: int
    retention_ms: int
    trim: TrimPolicy
    redis_wait: WaitPolicy
    gateway_id: str
    worker_id: str
    lease_ttl_ms: int


def process_id() -> str:
    """This process's default gateway and worker id: host name and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def read_bus(env: Mapping[str, str]) -> BusSettings:
    return BusSettings(
        redis_url=url(
            "SWITCHBOARD_REDIS_URL",
            env.get("SWITCHBOARD_REDIS_URL") or "redis://127.0.0.1:6379/0",
            REDIS_SCHEMES,
        ),
        namespace=env.get("SWITCHBOARD_NAMESPACE") or "sb",
        partitions=integer(env, "SWITCHBOARD_PARTITIONS", 32, minimum=1),
        stream_shards=integer(env, "SWITCHBOARD_STREAM_SHARDS", 1, minimum=1),
        retention_ms=int(number(env, "SWITCHBOARD_RETENTION_HOURS", 24.0) * 3600 * 1000),
        trim=TrimPolicy(
            max_len=integer(env, "SWITCHBOARD_STREAM_MAX_LEN", DEFAULT_STREAM_MAX_LEN, minimum=1),
            interval_s=max(
                0.1, number(env, "SWITCHBOARD_TRIM_INTERVAL_S", DEFAULT_TRIM_INTERVAL_S)
            ),
            keep_alive_ttl_s=max(
                1.0, number(env, "SWITCHBOARD_GATEWAY_STREAM_TTL_S", DEFAULT_KEEP_ALIVE_TTL_S)
            ),
        ),
        redis_wait=WaitPolicy(
            replicas=integer(env, "SWITCHBOARD_REDIS_WAIT_REPLICAS", DEFAULT_WAIT_REPLICAS),
            timeout_ms=integer(
                env, "SWITCHBOARD_REDIS_WAIT_TIMEOUT_MS", DEFAULT_WAIT_TIMEOUT_MS, minimum=1
            ),
        ),
        gateway_id=env.get("SWITCHBOARD_GATEWAY_ID") or process_id(),
        worker_id=env.get("SWITCHBOARD_WORKER_ID") or process_id(),
        lease_ttl_ms=integer(env, "SWITCHBOARD_LEASE_TTL_MS", 5000, minimum=100),
    )
