"""The Redis broker's Lua scripts: each move between states is one script, so
Redis runs it whole and alone (a message is in exactly one state at any time).

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

# ARGV: prefix, then (queue, name, data, eta) per message: eta '' for a ready
# message, else the ETA (a score) and name is its scheduled name.
PUBLISH = (
    _WAKE
    + """
local p = ARGV[1]
local woken = {}
for i = 2, #ARGV, 4 do
  local q, name, data, eta = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  redis.call('SADD', p .. 'queues', q)
  if eta ~= '' then
    redis.call('ZADD', p .. 'scheduled:' .. q, eta, name)
  else
    redis.call('ZADD', p .. 'ready:' .. q, 0, name)
    woken[q] = (woken[q] or 0) + 1
  end
  redis.call('HSET', p .. 'data:' .. q, name, data)
end
for q, n in pairs(woken) do wake(p, q, n) end
return 1
"""
)

# ARGV: prefix, consumer, then its queues in priority order.
# Returns {queue, name, data}, false when every queue is empty, or an error
# starting with GONE when the consumer was recovered (its liveness lapsed).
CLAIM = """
local p, consumer = ARGV[1], ARGV[2]
if redis.call('HEXISTS', p .. 'consumers', consumer) == 0 then
  return redis.error_reply('GONE consumer ' .. consumer .. ' was declared dead and recovered')
end
for i = 3, #ARGV do
  local q = ARGV[i]
  while true do
    local popped = redis.call('ZPOPMIN', p .. 'ready:' .. q)
    if not popped[1] then break end
    local name = popped[1]
    local data = redis.call('HGET', p .. 'data:' .. q, name)
    if data then
      redis.call('HDEL', p .. 'data:' .. q, name)
      redis.call('HSET', p .. 'claims:' .. consumer, q .. '/' .. name, data)
      return {q, name, data}
    end
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
redis.call('ZADD', p .. 'ready:' .. q, 0, name)
redis.call('HSET', p .. 'data:' .. q, name, data)
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
  for _, sname in ipairs(due) do
    redis.call('ZREM', p .. 'scheduled:' .. q, sname)
    local data = redis.call('HGET', p .. 'data:' .. q, sname)
    if data then
      local name = string.sub(sname, string.find(sname, '_', 1, true) + 1)
      redis.call('HDEL', p .. 'data:' .. q, sname)
      redis.call('ZADD', p .. 'ready:' .. q, 0, name)
      redis.call('HSET', p .. 'data:' .. q, name, data)
      moved = moved + 1
    end
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

# ARGV: prefix, consumer, lease ms. The dead consumer's claims as a flat
# field/data list, or false if it is alive, unknown or being recovered.
RECOVER = """
local p, consumer, lease = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HEXISTS', p .. 'consumers', consumer) == 0 then return false end
if redis.call('EXISTS', p .. 'live:' .. consumer) == 1 then return false end
if not redis.call('SET', p .. 'recovering:' .. consumer, '1', 'NX', 'PX', lease) then
  return false
end
return redis.call('HGETALL', p .. 'claims:' .. consumer)
"""

# ARGV: prefix, consumer. Forget a recovered consumer if it holds no claims
# (else it stays, to be recovered again).
FORGET_CONSUMER = """
local p, consumer = ARGV[1], ARGV[2]
redis.call('DEL', p .. 'recovering:' .. consumer)
if redis.call('EXISTS', p .. 'live:' .. consumer) == 1 then return 0 end
if redis.call('HLEN', p .. 'claims:' .. consumer) > 0 then return 0 end
redis.call('HDEL', p .. 'consumers', consumer)
redis.call('DEL', p .. 'wake-consumer:' .. consumer)
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

# ARGV: prefix, new key (hex). Returns the keyring {current, previous JSON}; makes
# the key only while no message is stored, else returns an error (a lost key).
KEYS = """
local p, new = ARGV[1], ARGV[2]
local current = redis.call('HGET', p .. 'keys', 'current')
if current then return {current, redis.call('HGET', p .. 'keys', 'previous') or '[]'} end
local stored = 0
for _, q in ipairs(redis.call('SMEMBERS', p .. 'queues')) do
  stored = stored + redis.call('HLEN', p .. 'data:' .. q) + redis.call('ZCARD', p .. 'dead:' .. q)
end
for _, c in ipairs(redis.call('HKEYS', p .. 'consumers')) do
  stored = stored + redis.call('HLEN', p .. 'claims:' .. c)
end
if stored > 0 then
  return redis.error_reply('LOSTKEY ' .. stored)
end
redis.call('HSET', p .. 'keys', 'current', new, 'previous', '[]')
return {new, '[]'}
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
