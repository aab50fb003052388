"""The Redis broker's scripts: every change to a generation's keys, each one atomic.

::

    sluice:gen:<id>          hash    model, status, events (set at the end), listeners, followers,
                                     idle_since, owner (worker), key, meta; expires
    sluice:gen:<id>:events   stream  one entry per event, entry id 0-(seq+1), field d = JSON; expires
    sluice:gen:<id>:lease    string  the owner's id; expires unless renewed (SLUICE_LEASE_S)
    sluice:running           zset    running generations, scored by their lease's end (ms, Redis's clock)
    sluice:ended             zset    finished ones, scored by their end (s, Redis's clock)

Every per-generation key expires: a running one's after a day at most (a
backstop), a finished one's ``SLUICE_GENERATION_TTL_S`` after its end. The
two sets are indexes, trimmed rather than expired: a generation leaves
``sluice:running`` when it ends (its final event, its loss, its deletion) and
``sluice:ended`` when it is forgotten (past its TTL, or evicted for room), so
their size is bounded by what runs and what is kept, never by what ever ran.

*Lost generations.* A running generation whose lease is gone has no producer
any more (its worker died, or stalled longer than the lease). Whoever notices
first ends it, with the same function (``lose``): its ``generation_lost``
event numbered after the last event Redis holds (the last one any client
saw), its state, its expiry and its move to ``sluice:ended``, in one script,
so "running → lost" happens once. Three callers notice: every worker's
janitor (``REAP``, one call a tick, looking only at generations whose lease
end has passed: the front of ``sluice:running``), a worker's reader for the
generations its listeners follow (``SWEEP``), and admission when it finds no
room (``FLUSH``): no generation counts against ``SLUICE_MAX_GENERATIONS`` for
longer than its lease once its worker is gone.

Scores come from Redis's own clock (``TIME``), the clock leases expire by, so
hosts whose clocks disagree still agree on which lease ended.
"""

from __future__ import annotations

__all__ = ["ATTACH", "DETACH", "FLUSH", "FOLLOW", "REAP", "RENEW", "SWEEP"]

# Shared by the scripts that change a generation's state.
_PRELUDE = """
local function clock()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s + us / 1000000, s * 1000 + math.floor(us / 1000)
end

-- Forget a generation: its keys and its place in the indexes.
local function forget(id)
  local h = 'sluice:gen:' .. id
  redis.call('DEL', h, h .. ':events', h .. ':lease')
  redis.call('ZREM', 'sluice:running', id)
  redis.call('ZREM', 'sluice:ended', id)
end

-- End a running generation whose producer is gone: generation_lost, numbered after
-- the last event Redis holds; it now expires like any finished generation.
local function lose(id, lost, ttl, now)
  local h = 'sluice:gen:' .. id
  local stream = h .. ':events'
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  local n = 0
  if #last > 0 then n = tonumber(string.sub(last[1][1], 3)) end
  redis.call('XADD', stream, '0-' .. (n + 1), 'd', lost)
  redis.call('HSET', h, 'status', 'error', 'events', n + 1)
  redis.call('EXPIRE', h, ttl)
  redis.call('EXPIRE', stream, ttl)
  redis.call('ZREM', 'sluice:running', id)
  redis.call('ZADD', 'sluice:ended', now, id)
  redis.call('PUBLISH', 'sluice:new', id)
end

-- Up to `limit` running generations whose lease end has passed: lost if the lease is
-- gone, rescheduled if it was renewed meanwhile, dropped from the index if their hash is.
local function reap(lost, ttl, limit, now, ms)
  local gone = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', 'sluice:running', '-inf', ms, 'LIMIT', 0, limit)) do
    local status = redis.call('HGET', 'sluice:gen:' .. id, 'status')
    if status ~= 'running' then
      redis.call('ZREM', 'sluice:running', id)
    else
      local left = redis.call('PTTL', 'sluice:gen:' .. id .. ':lease')
      if left > 0 then
        redis.call('ZADD', 'sluice:running', ms + left, id)
      else
        lose(id, lost, ttl, now)
        gone[#gone + 1] = id
      end
    end
  end
  return gone
end

-- Up to `limit` finished generations past their ttl, oldest first.
local function trim(ttl, limit, now)
  local old = redis.call('ZRANGEBYSCORE', 'sluice:ended', '-inf', now - ttl, 'LIMIT', 0, limit)
  for _, id in ipairs(old) do forget(id) end
  return #old
end
"""

# ARGV: now (the worker's clock, for idle_since), ttl, running ttl, max generations, lease ms,
# owner, the generation_lost JSON, the number of new generations C; C × (id, model, key, meta);
# then per generation with events: id, first entry number (seq+1), n, status ("" while it
# runs), and its n events' JSON joined by newlines (JSON text has none).
# Returns {ids of new generations refused (no room), ids whose events were refused (ended by
# someone else, i.e. lost, or expired), ids of other workers' generations it ended as lost}.
FLUSH = (
    _PRELUDE
    + """
local now, ttl, rttl, max, lease, owner, lost = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local t, ms = clock()
local full, refused, notify, gone = {}, {}, {}, {}
local creates = tonumber(ARGV[8])
local i = 9
if creates > 0 then
  trim(ttl, 100, t)
  local count = redis.call('ZCARD', 'sluice:running') + redis.call('ZCARD', 'sluice:ended')
  -- No room: first end the generations whose worker is gone, so that they can make room.
  if count + creates > max then gone = reap(lost, ttl, 100, t, ms) end
  for c = 1, creates do
    local id, model, key, meta = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    i = i + 4
    local room = true
    while count >= max do
      local oldest = redis.call('ZRANGE', 'sluice:ended', 0, 0)
      if #oldest == 0 then room = false; break end
      forget(oldest[1])
      count = count - 1
    end
    if room then
      local h = 'sluice:gen:' .. id
      redis.call('HSET', h, 'model', model, 'status', 'running', 'events', 0, 'listeners', 0, 'followers', 0,
                 'idle_since', now, 'owner', owner, 'key', key, 'meta', meta)
      redis.call('EXPIRE', h, rttl)
      redis.call('SET', h .. ':lease', owner, 'PX', lease)
      redis.call('ZADD', 'sluice:running', ms + tonumber(lease), id)
      count = count + 1
    else
      full[#full + 1] = id
    end
  end
end
while i <= #ARGV do
  local id, first, n, status, blob = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local hash = 'sluice:gen:' .. id
  local stream = hash .. ':events'
  local state = redis.call('HMGET', hash, 'status', 'followers')
  local ok = state[1] == 'running'
  local pos = 1
  for k = 0, n - 1 do
    if not ok then break end
    local stop = string.find(blob, '\\n', pos, true)
    local json
    if stop then
      json = string.sub(blob, pos, stop - 1)
      pos = stop + 1
    else
      json = string.sub(blob, pos)
    end
    local added = redis.pcall('XADD', stream, '0-' .. (first + k), 'd', json)
    if type(added) == 'table' and added.err then ok = false end
  end
  if not ok then
    refused[#refused + 1] = id
  else
    if first == 1 then redis.call('EXPIRE', stream, rttl) end
    if status ~= '' then
      redis.call('HSET', hash, 'status', status, 'events', first + n - 1)
      redis.call('EXPIRE', hash, ttl)
      redis.call('EXPIRE', stream, ttl)
      redis.call('ZREM', 'sluice:running', id)
      redis.call('ZADD', 'sluice:ended', t, id)
    end
    if state[2] and tonumber(state[2]) > 0 then notify[#notify + 1] = id end
  end
end
if #notify > 0 then redis.call('PUBLISH', 'sluice:new', table.concat(notify, ' ')) end
return {full, refused, gone}
"""
)

# ARGV: owner, lease ms, ids… The lease and its end in the index, for each.
RENEW = """
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
for i = 3, #ARGV do
  redis.call('SET', 'sluice:gen:' .. ARGV[i] .. ':lease', ARGV[1], 'PX', ARGV[2])
  redis.call('ZADD', 'sluice:running', 'XX', until_ms, ARGV[i])
end
return #ARGV - 2
"""

# ARGV: the generation_lost JSON, ttl, limit. The janitor's tick: generations whose worker is
# gone end as lost, finished ones past their ttl are forgotten. Returns {lost ids, forgotten}.
REAP = (
    _PRELUDE
    + """
local t, ms = clock()
local limit = tonumber(ARGV[3])
local gone = reap(ARGV[1], ARGV[2], limit, t, ms)
return {gone, trim(ARGV[2], limit, t)}
"""
)

# ARGV: id, followers delta, first entry id ('' to read nothing), count.
# Counts a follower in or out (so flushes name this generation on sluice:new) and reads what
# is there: {1 if it ended, entries}; nil if it is gone.
FOLLOW = """
local h = 'sluice:gen:' .. ARGV[1]
local status = redis.call('HGET', h, 'status')
if not status then return false end
if ARGV[2] ~= '0' then redis.call('HINCRBY', h, 'followers', ARGV[2]) end
if ARGV[3] == '' then return {0, {}} end
local ended = 0
if status ~= 'running' then ended = 1 end
return {ended, redis.call('XRANGE', h .. ':events', ARGV[3], '+', 'COUNT', ARGV[4])}
"""

# ARGV: the generation_lost JSON, ttl, count, then (id, first entry id) per generation.
# A reader's look at the quiet generations its listeners follow: for each, nil if it is
# gone, else {1 if it ended, the entries from there, 1 if this call found it lost}.
SWEEP = (
    _PRELUDE
    + """
local t = clock()
local out = {}
local k = 0
for i = 4, #ARGV, 2 do
  local id, first = ARGV[i], ARGV[i + 1]
  local h = 'sluice:gen:' .. id
  local status = redis.call('HGET', h, 'status')
  k = k + 1
  if not status then
    out[k] = false
  else
    local lost = 0
    if status == 'running' and redis.call('EXISTS', h .. ':lease') == 0 then
      lose(id, ARGV[1], ARGV[2], t)
      status = 'error'
      lost = 1
    end
    local ended = 0
    if status ~= 'running' then ended = 1 end
    out[k] = {ended, redis.call('XRANGE', h .. ':events', first, '+', 'COUNT', ARGV[3]), lost}
  end
end
return out
"""
)

# ARGV: id. A listener in (the detach grace pauses), only while the generation exists: a
# write to a hash that expired would make one that never does.
ATTACH = """
local h = 'sluice:gen:' .. ARGV[1]
if redis.call('EXISTS', h) == 0 then return 0 end
redis.call('HINCRBY', h, 'listeners', 1)
redis.call('HSET', h, 'idle_since', '')
return 1
"""

# ARGV: id, now. A listener out; the last one out starts the idle clock.
DETACH = """
local h = 'sluice:gen:' .. ARGV[1]
if redis.call('EXISTS', h) == 0 then return 0 end
if redis.call('HINCRBY', h, 'listeners', -1) <= 0 then
  redis.call('HSET', h, 'listeners', 0, 'idle_since', ARGV[2])
end
return 1
"""
