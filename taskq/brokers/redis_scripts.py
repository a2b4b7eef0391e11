"""The Redis broker's Lua scripts: each move between states is one script, so
Redis runs it whole and alone (a message is in exactly one state at any time).
Publishing needs none: one ZADD is atomic already (see ``redis.py``).

Every script takes the key prefix as ``ARGV[1]`` and names its keys from it;
the layout is described in ``redis.py``. A script returns what the caller needs
to tell the outcome apart (1 moved, 0 nothing to move), never raises for a
message already settled by someone else.
"""

from __future__ import annotations

# Wake-up tokens kept per queue at most: enough that every idle consumer wakes,
# few enough that a queue nobody consumes keeps no more.
WAKE_TOKENS = 64

_WAKE = f"""
local function wake(p, q, n)
  local key = p .. 'wake:' .. q
  local have = redis.call('LLEN', key)
  for _ = 1, math.min(n, {WAKE_TOKENS} - have) do redis.call('RPUSH', key, '1') end
end
"""

# ARGV: prefix, consumer, most, then its queues in priority order. Takes up to
# ``most`` messages, but no more than a 32nd of what is ready, so a shallow queue
# is shared out one message at a time. A claim also trims the queue's wake-up
# tokens (publishing pushes one per message without looking).
# Returns {queue, name, data, name, data...} (one queue's), false when every
# queue is empty, or an error starting with GONE when the consumer was
# recovered (its liveness lapsed).
CLAIM = f"""
local p, consumer, most = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('HEXISTS', p .. 'consumers', consumer) == 0 then
  return redis.error_reply('GONE consumer ' .. consumer .. ' was declared dead and recovered')
end
for i = 4, #ARGV do
  local q = ARGV[i]
  local ready = p .. 'ready:' .. q
  local depth = redis.call('ZCARD', ready)
  if depth > 0 then
    local popped = redis.call('ZPOPMIN', ready, math.max(1, math.min(most, math.floor(depth / 32))))
    local taken = {{q}}
    for j = 1, #popped, 2 do
      local cut = string.find(popped[j], '\0', 1, true)
      local name, data = string.sub(popped[j], 1, cut - 1), string.sub(popped[j], cut + 1)
      redis.call('HSET', p .. 'claims:' .. consumer, q .. '/' .. name, data)
      table.insert(taken, name)
      table.insert(taken, data)
    end
    redis.call('LTRIM', p .. 'wake:' .. q, -{WAKE_TOKENS}, -1)
    return taken
  end
end
return false
"""

# ARGV: prefix, consumer, queue, name. Back to ready, unchanged: 1, or 0 if the
# claim is not there (settled already).
REQUEUE = (
    _WAKE
    + """
local p, consumer, q, name = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local claims = p .. 'claims:' .. consumer
local data = redis.call('HGET', claims, q .. '/' .. name)
if not data then return 0 end
redis.call('HDEL', claims, q .. '/' .. name)
redis.call('ZADD', p .. 'ready:' .. q, 0, name .. '\0' .. data)
wake(p, q, 1)
return 1
"""
)

# ARGV: prefix, consumer, queue, name, record (JSON). 1, or 0 if not claimed.
DEAD_LETTER = """
local p, consumer, q, name, record = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local claims = p .. 'claims:' .. consumer
local data = redis.call('HGET', claims, q .. '/' .. name)
if not data then return 0 end
redis.call('HDEL', claims, q .. '/' .. name)
redis.call('SADD', p .. 'queues', q)
redis.call('ZADD', p .. 'dead:' .. q, redis.call('INCR', p .. 'dead-seq'), name)
redis.call('HSET', p .. 'dead-data:' .. q, name, data)
redis.call('HSET', p .. 'dead-record:' .. q, name, record)
return 1
"""

# ARGV: prefix, now, most per queue. Moves due scheduled messages to ready under
# their ready name; returns how many. Bounded per call, so one call never holds
# Redis for long; the supervisor calls again on its next round.
PROMOTE = (
    _WAKE
    + """
local p, now, most = ARGV[1], ARGV[2], tonumber(ARGV[3])
local moved = 0
for _, q in ipairs(redis.call('SMEMBERS', p .. 'queues')) do
  local due = redis.call('ZRANGEBYSCORE', p .. 'scheduled:' .. q, '-inf', now, 'LIMIT', 0, most)
  for _, member in ipairs(due) do
    redis.call('ZREM', p .. 'scheduled:' .. q, member)
    -- '<ETA>_<name>\0<data>' becomes '<name>\0<data>'
    local cut = string.find(member, '_', 1, true)
    redis.call('ZADD', p .. 'ready:' .. q, 0, string.sub(member, cut + 1))
    moved = moved + 1
  end
  if #due > 0 then wake(p, q, #due) end
end
return moved
"""
)

# ARGV: prefix, consumer, info (JSON), liveness ms. Registers a consumer: 1 if a
# supervisor vouches for it already (its live key exists), 0 if the opener must
# keep it alive itself, -1 if the name is taken.
OPEN_CONSUMER = """
local p, consumer, info, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HSETNX', p .. 'consumers', consumer, info) == 0 then return -1 end
redis.call('DEL', p .. 'wake-consumer:' .. consumer)
if redis.call('EXISTS', p .. 'live:' .. consumer) == 1 then return 1 end
redis.call('SET', p .. 'live:' .. consumer, '1', 'PX', ttl)
return 0
"""

# ARGV: prefix, consumer, lease ms. {the field of the claim it had started (or
# ''), then the dead consumer's claims as a flat field/data list}, or false if
# it is alive, unknown or being recovered.
RECOVER = """
local p, consumer, lease = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HEXISTS', p .. 'consumers', consumer) == 0 then return false end
if redis.call('EXISTS', p .. 'live:' .. consumer) == 1 then return false end
if not redis.call('SET', p .. 'recovering:' .. consumer, '1', 'NX', 'PX', lease) then
  return false
end
local claims = redis.call('HGETALL', p .. 'claims:' .. consumer)
table.insert(claims, 1, redis.call('GET', p .. 'running:' .. consumer) or '')
return claims
"""

# ARGV: prefix, consumer. Forget a recovered consumer if it holds no claims
# (else it stays, to be recovered again).
FORGET_CONSUMER = """
local p, consumer = ARGV[1], ARGV[2]
redis.call('DEL', p .. 'recovering:' .. consumer)
if redis.call('EXISTS', p .. 'live:' .. consumer) == 1 then return 0 end
if redis.call('HLEN', p .. 'claims:' .. consumer) > 0 then return 0 end
redis.call('HDEL', p .. 'consumers', consumer)
redis.call('DEL', p .. 'wake-consumer:' .. consumer, p .. 'running:' .. consumer)
return 1
"""

# ARGV: prefix, cutoff, then task ids. Deletes the results of those ids still
# stored before the cutoff (one stored again since the listing stays).
EXPIRE_RESULTS = """
local p, cutoff = ARGV[1], tonumber(ARGV[2])
local removed = 0
for i = 3, #ARGV do
  local at = redis.call('ZSCORE', p .. 'results', ARGV[i])
  if at and tonumber(at) < cutoff then
    redis.call('ZREM', p .. 'results', ARGV[i])
    removed = removed + redis.call('DEL', p .. 'result:' .. ARGV[i])
  end
end
return removed
"""

# ARGV: prefix. Forget supervisors whose liveness lapsed; returns their names.
# KEYS none; ARGV: key, its expected value, the new value, TTL ms. 1 if swapped.
SWAP = """
if redis.call('GET', ARGV[1]) == ARGV[2] then
  redis.call('SET', ARGV[1], ARGV[3], 'PX', ARGV[4])
  return 1
end
return 0
"""

FORGET_DEAD_WORKERS = """
local p = ARGV[1]
local gone = {}
for _, name in ipairs(redis.call('HKEYS', p .. 'workers')) do
  if redis.call('EXISTS', p .. 'alive:' .. name) == 0 then
    redis.call('HDEL', p .. 'workers', name)
    table.insert(gone, name)
  end
end
return gone
"""

# ARGV: prefix, a new key (hex), the keys the caller holds already (current hex
# or '', previous as JSON). Returns the keyring {current, previous JSON}. With
# no key stored (Redis restarted without persistence), the caller's keys are
# put back, or, from a caller holding none, a new key is made, but only while
# no message is stored (else an error: a lost key). A caller's current key that
# the stored keyring does not hold joins its previous keys: what it signed
# still verifies everywhere.
KEYS = """
local p, new, held, held_previous = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local keys = p .. 'keys'
local current = redis.call('HGET', keys, 'current')
if not current then
  if held ~= '' then
    redis.call('HSET', keys, 'current', held, 'previous', held_previous)
    return {held, held_previous}
  end
  local stored = 0
  for _, q in ipairs(redis.call('SMEMBERS', p .. 'queues')) do
    for _, state in ipairs({'ready:', 'scheduled:', 'dead:'}) do
      stored = stored + redis.call('ZCARD', p .. state .. q)
    end
  end
  for _, c in ipairs(redis.call('HKEYS', p .. 'consumers')) do
    stored = stored + redis.call('HLEN', p .. 'claims:' .. c)
  end
  if stored > 0 then
    return redis.error_reply('LOSTKEY ' .. stored)
  end
  redis.call('HSET', keys, 'current', new, 'previous', '[]')
  return {new, '[]'}
end
local previous = redis.call('HGET', keys, 'previous') or '[]'
if held ~= '' and held ~= current and not string.find(previous, '"' .. held .. '"', 1, true) then
  local list = cjson.decode(previous)
  table.insert(list, held)
  previous = cjson.encode(list)
  redis.call('HSET', keys, 'previous', previous)
end
return {current, previous}
"""

# ARGV: prefix, new key (hex). The current key joins the previous ones.
ROTATE_KEY = """
local p, new = ARGV[1], ARGV[2]
local current = redis.call('HGET', p .. 'keys', 'current')
if not current then return redis.error_reply('NOKEY no key to rotate') end
local previous = cjson.decode(redis.call('HGET', p .. 'keys', 'previous') or '[]')
table.insert(previous, 1, current)
redis.call('HSET', p .. 'keys', 'current', new, 'previous', cjson.encode(previous))
return 1
"""

# ARGV: prefix, snapshot prefix, TTL (ms), then the queues to export. Copies
# every state key of those queues and every consumer's claims under the
# snapshot prefix in one step, so an export reads one instant of the broker
# however long it takes: a message is in exactly one of the copies. The TTL
# removes a snapshot whose export died. Returns the consumers whose claims were
# copied.
SNAPSHOT = """
local p, s, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local function copy(src, dst)
  if redis.call('COPY', src, dst) == 1 then redis.call('PEXPIRE', dst, ttl) end
end
for i = 4, #ARGV do
  local q = ARGV[i]
  for _, kind in ipairs({'ready:', 'scheduled:', 'dead:', 'dead-data:', 'dead-record:'}) do
    copy(p .. kind .. q, s .. kind .. q)
  end
end
local consumers = redis.call('HKEYS', p .. 'consumers')
for _, c in ipairs(consumers) do copy(p .. 'claims:' .. c, s .. 'claims:' .. c) end
return consumers
"""

# ARGV: prefix, queue, name, data, record (JSON). A dead message put back.
RESTORE_DEAD = """
local p, q, name = ARGV[1], ARGV[2], ARGV[3]
redis.call('SADD', p .. 'queues', q)
redis.call('ZADD', p .. 'dead:' .. q, redis.call('INCR', p .. 'dead-seq'), name)
redis.call('HSET', p .. 'dead-data:' .. q, name, ARGV[4])
redis.call('HSET', p .. 'dead-record:' .. q, name, ARGV[5])
return 1
"""

# -- the periodic schedule (see ``RedisSchedule``) ------------------------------

# KEYS: none. ARGV: lease key, owner, ttl in ms. Takes a free lease or renews
# the owner's own; 1 when ``owner`` holds it afterwards, else 0.
ACQUIRE_LEASE = """
local key, owner, ttl = ARGV[1], ARGV[2], ARGV[3]
local holder = redis.call('GET', key)
if holder == false then
  redis.call('SET', key, owner, 'PX', ttl)
  return 1
elseif holder == owner then
  redis.call('PEXPIRE', key, ttl)
  return 1
end
return 0
"""

# ARGV: lease key, owner. Deletes the lease only if ``owner`` holds it.
RELEASE_LEASE = """
if redis.call('GET', ARGV[1]) == ARGV[2] then redis.call('DEL', ARGV[1]) end
return 0
"""

# ARGV: tick key, tick. Records the tick unless a later or equal one is; 1 if recorded.
RECORD_TICK = """
local last = tonumber(redis.call('GET', ARGV[1]))
if last ~= nil and last >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', ARGV[1], ARGV[2])
return 1
"""
