"""The Lua scripts the shared wallet runs in Redis, each one atomic there.

``SYNC`` publishes a process's credit exposure and reads the tenant's
used total; ``REPORT`` moves settled charges (and their allowance and pool
parts) into the shared totals exactly once; ``GRANT`` claims a tenant's
allowance and pool for a process's reservations in flight. Their keys and
arguments are documented where :class:`cambist.ledger.shared_wallet.SharedWallet`
calls them.

Per tenant ``t``, Redis holds:

* ``{prefix}:used:{t}``: every usage charge ever reported, created from the
  journal's usage total the first time it is needed;
* ``{prefix}:cr:{t}``: a hash, one field per process: that process's
  *exposure*, its holds plus the charges it settled and has not reported yet.
  Only the owner writes its field, always with an absolute value.

and per process ``{prefix}:rpos:{process}``, how far its outbox was reported.

Per tenant and period (``{day}``/``{month}``: the
period's start, epoch seconds), Redis holds

* ``{prefix}:gused:a:{t}:{day}`` and ``{prefix}:gused:p:{t}:{month}``: the
  allowance and pool parts reported, created from the ``usage`` table's sums
  (:meth:`GrantCounters.query`, at the last load) the first time needed;
* ``{prefix}:gclaim:a:{t}:{day}`` and ``{prefix}:gclaim:p:{t}:{month}``: a
  hash, one field per process: its *claim*, the grant parts it settled and
  has not reported plus what it claimed for its holds. Only the owner writes
  its field.
"""

from __future__ import annotations

__all__ = ["GRANT", "REPORT", "SYNC"]

SYNC = """
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[4]) end
if tonumber(ARGV[2]) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local used = tonumber(redis.call('GET', KEYS[2]))
local out = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do out = out + tonumber(v) end
return {string.format('%.0f', tonumber(ARGV[3]) - used - out), string.format('%.0f', used)}
"""

REPORT = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return cur end
for i = 2, #KEYS do
  local j = 3 * i - 3
  if redis.call('EXISTS', KEYS[i]) == 0 then redis.call('SET', KEYS[i], ARGV[j + 1]) end
  redis.call('INCRBY', KEYS[i], ARGV[j])
  if tonumber(ARGV[j + 2]) > 0 then redis.call('EXPIRE', KEYS[i], ARGV[j + 2]) end
end
redis.call('SET', KEYS[1], ARGV[2])
return ARGV[2]
"""

# Claims a tenant's grants for this process: allowance first, then pool.
# KEYS: allowance used (day), allowance claims (hash, day), pool used (month),
# pool claims (hash, month). ARGV: process, wanted (its holds), allowance
# floor, pool floor (its settled, unreported grant parts), the two caps, the
# two seeds (the usage table's sums), the two TTLs (s). Returns this process's
# claims and what is left unclaimed, allowance then pool.
GRANT = """
local function side(used_key, claims_key, cap, floor, want, seed, ttl)
  if cap <= 0 then return floor, 0 end
  if redis.call('EXISTS', used_key) == 0 then redis.call('SET', used_key, seed, 'EX', ttl) end
  local used = tonumber(redis.call('GET', used_key))
  local others = 0
  local all = redis.call('HGETALL', claims_key)
  for i = 1, #all, 2 do
    if all[i] ~= ARGV[1] then others = others + tonumber(all[i + 1]) end
  end
  local free = cap - used - others - floor
  if free < 0 then free = 0 end
  local take = math.min(want, free)
  local mine = floor + take
  if mine == 0 then
    redis.call('HDEL', claims_key, ARGV[1])
  else
    redis.call('HSET', claims_key, ARGV[1], string.format('%.0f', mine))
    redis.call('EXPIRE', claims_key, ttl)
  end
  return mine, free - take
end
local want = tonumber(ARGV[2])
local floor_a = tonumber(ARGV[3])
local floor_p = tonumber(ARGV[4])
local a, a_free = side(KEYS[1], KEYS[2], tonumber(ARGV[5]), floor_a, want, ARGV[7], ARGV[9])
local p, p_free = side(KEYS[3], KEYS[4], tonumber(ARGV[6]), floor_p, want - (a - floor_a),
                       ARGV[8], ARGV[10])
return {string.format('%.0f', a), string.format('%.0f', p),
        string.format('%.0f', a_free), string.format('%.0f', p_free)}
"""
