"""The Lua scripts behind ``RedisBus``'s atomic operations, and how they are run.

Each script is one operation that must not interleave with another client's
commands: re-reading one's own pending entries as a counted delivery, a step
of ``XAUTOCLAIM`` with true delivery counts, ``touch``, the fenced lease
(acquire, renew, release, ``set_if_lease``) and the liveness registry. Which
operation uses which, and why, is in :mod:`bus.redis`'s docstring.
:class:`Script` runs one by ``EVALSHA`` and falls back to ``EVAL`` when the
server has forgotten it (a restart: ``NOSCRIPT``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from bus.base import CommandError
from bus.cluster import CommandClient
from bus.resp import Arg

__all__ = [
    "ACQUIRE",
    "AUTOCLAIM_STEP",
    "HEARTBEAT",
    "LIVE_MEMBERS",
    "RELEASE",
    "RENEW",
    "REREAD_PENDING",
    "SET_IF_LEASE",
    "TOUCH",
    "Script",
]


class Script:
    """A Lua script run by SHA1, loaded on first use or after a restart."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, client: CommandClient, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except CommandError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await client.execute("EVAL", self.source, len(keys), *keys, *args)


# KEYS: stream. ARGV: group, consumer, exclusive start id, count.
# Returns {{id, fields, deliveries}...}, {trimmed ids...}.
REREAD_PENDING = Script("""
local pend = redis.call('XPENDING', KEYS[1], ARGV[1], '(' .. ARGV[3], '+', ARGV[4], ARGV[2])
if #pend == 0 then return {{}, {}} end
local ids, counts = {}, {}
for i, p in ipairs(pend) do
  ids[i] = p[1]
  counts[p[1]] = p[4]
end
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))
local out, seen, trimmed = {}, {}, {}
for _, e in ipairs(claimed) do
  if e and e[2] then
    seen[e[1]] = true
    out[#out + 1] = {e[1], e[2], counts[e[1]] + 1}
  end
end
for _, id in ipairs(ids) do
  if not seen[id] then trimmed[#trimmed + 1] = id end
end
if #trimmed > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(trimmed)) end
return {out, trimmed}
""")

# KEYS: stream. ARGV: group, consumer, min idle ms, cursor, count.
# Returns next cursor, {{id, fields, deliveries}...}, {trimmed ids...}.
AUTOCLAIM_STEP = Script("""
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out, trimmed = {}, {}
for _, e in ipairs(r[2]) do
  if e and e[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    out[#out + 1] = {e[1], e[2], p[1][4]}
  elseif e then
    trimmed[#trimmed + 1] = e[1]
  end
end
if r[3] then
  for _, id in ipairs(r[3]) do trimmed[#trimmed + 1] = id end
end
if #trimmed > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(trimmed)) end
return {r[1], out, trimmed}
""")

# KEYS: lease, epoch. ARGV: owner, ttl ms. Returns the epoch, or nil when held by another.
ACQUIRE = Script("""
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
elseif cur then
  return false
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
""")

# KEYS: lease, epoch. ARGV: owner, epoch, ttl ms. Returns 1 when renewed.
RENEW = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 0
""")

# KEYS: lease, epoch. ARGV: owner, epoch. Returns 1 when released.
RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
""")

# KEYS: lease, epoch, key. ARGV: owner, epoch, value, ttl ms ('' for none). 1 when written.
SET_IF_LEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  if ARGV[4] == '' then
    redis.call('SET', KEYS[3], ARGV[3])
  else
    redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
  end
  return 1
end
return 0
""")

# KEYS: stream. ARGV: group, consumer, ids... Returns how many were touched.
TOUCH = Script("""
-- Lua truncates unpack() to one value unless it comes last: build the args.
local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[2] then args[#args + 1] = ARGV[i] end
end
if #args == 5 then return 0 end
args[#args + 1] = 'JUSTID'
redis.call(unpack(args))
return #args - 6
""")

# KEYS: registry. ARGV: member, ttl ms.
HEARTBEAT = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
""")

# KEYS: registry. Returns the live members.
LIVE_MEMBERS = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
""")
