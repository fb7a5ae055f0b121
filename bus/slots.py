"""Redis Cluster's key space: which of the 16384 slots a key, or a command, is in.

Pure: ``key_slot`` hashes a key as Redis does (CRC16 of the first non-empty
``{hash tag}``, mod 16384); ``keys_of`` knows where each command keeps its
keys; ``slot_of`` gives the one slot a command touches or refuses it with
``CrossSlot`` when its keys span several (on a cluster it could not run
atomically). ``redirect_of`` and ``slot_unavailable`` read the error replies
that say a slot is served elsewhere (``MOVED``, ``ASK``) or not at the moment
(``CLUSTERDOWN``, ``TRYAGAIN``, ...). The routing that acts on them is
:mod:`bus.cluster`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from bus.base import CommandError
from bus.resp import Arg

__all__ = [
    "SLOTS",
    "CrossSlot",
    "crc16",
    "key_slot",
    "keys_of",
    "redirect_of",
    "slot_of",
    "slot_unavailable",
]

SLOTS = 16384


class CrossSlot(CommandError):
    """A command's keys hash to different slots: on a cluster it cannot run atomically."""


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc


@functools.lru_cache(maxsize=65536)
def key_slot(key: str) -> int:
    """The cluster slot of ``key``: only the first non-empty ``{tag}`` is hashed."""
    raw = key.encode()
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc16(raw) % SLOTS


# Commands with no key, or whose first argument is not one; anything not
# listed has its key at position 1.
_KEYLESS = frozenset(
    {
        "PING", "ECHO", "INFO", "TIME", "CLUSTER", "SCRIPT", "CONFIG", "DBSIZE",
        "FLUSHALL", "FLUSHDB", "COMMAND", "ACL", "AUTH", "SELECT", "HELLO",
        "CLIENT", "ASKING", "READONLY", "WAIT", "ROLE", "LASTSAVE", "DEBUG",
    }
)  # fmt: skip
_ALL_KEYS = frozenset({"DEL", "UNLINK", "EXISTS", "MGET", "TOUCH"})
_SUBCOMMAND_KEY = frozenset({"XGROUP", "XINFO", "OBJECT", "MEMORY"})


def keys_of(args: Sequence[Arg]) -> list[str]:
    """The key arguments of a command, as the cluster routes it."""
    name = str(args[0]).upper()
    if name in _KEYLESS or len(args) < 2:
        return []
    if name in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"):
        return [str(k) for k in args[3 : 3 + int(args[2])]]
    if name in ("XREAD", "XREADGROUP"):
        # XREADGROUP GROUP g c ...: a group or consumer named "streams" is not the keyword.
        skip = 4 if name == "XREADGROUP" else 1
        upper = [str(a).upper() for a in args]
        at = upper.index("STREAMS", skip) + 1
        count = (len(args) - at) // 2
        return [str(k) for k in args[at : at + count]]
    if name in _ALL_KEYS:
        return [str(k) for k in args[1:]]
    if name in _SUBCOMMAND_KEY:
        return [str(args[2])] if len(args) > 2 else []
    return [str(args[1])]


def slot_of(args: Sequence[Arg]) -> int | None:
    """The one slot a command touches; None when keyless; ``CrossSlot`` when several."""
    keys = keys_of(args)
    if not keys:
        return None
    slot = key_slot(keys[0])
    for key in keys[1:]:
        if key_slot(key) != slot:
            raise CrossSlot(
                f"CROSSSLOT {args[0]!s} touches keys in different slots "
                f"({keys[0]!r} in {slot}, {key!r} in {key_slot(key)}); "
                "give them one hash tag"
            )
    return slot


# -- redirections ---------------------------------------------------------------


def redirect_of(error: BaseException) -> tuple[str, int, tuple[str, int]] | None:
    """``("MOVED"|"ASK", slot, (host, port))`` from a redirection error reply."""
    if not isinstance(error, CommandError):
        return None
    text = str(error)
    if not text.startswith(("MOVED ", "ASK ")):
        return None
    kind, slot, where = text.split()[:3]
    host, _, port = where.rpartition(":")
    return kind, int(slot), (host, int(port))


def slot_unavailable(error: BaseException) -> bool:
    """Whether an error reply says the slot cannot be served now (retriable)."""
    # READONLY: the map still names a master that came back as a replica.
    return isinstance(error, CommandError) and str(error).startswith(
        ("CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY", "LOADING")
    )
