"""The review queue's state changes as Redis Lua scripts: each one runs atomically in Redis.

Atomicity is what makes "two reviewers never get the same item" and "a decision needs a live
lease" hold across any number of app replicas. Every script first returns expired leases of the
policy to its queue, writes its audit entries itself (same transaction) and reads the clock from
Redis, so replicas with skewed clocks agree on lease expiry.

ARGV[1] key prefix, ARGV[2] audit entries kept, ARGV[3] item TTL in seconds; script arguments follow.
"""

from __future__ import annotations

_PRELUDE = """
local prefix, audit_max, ttl = ARGV[1], ARGV[2], ARGV[3]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function audit(now, actor, action, id, policy, previous, outcome, detail)
  local post_id = redis.call('HGET', prefix .. 'item:' .. id, 'post_id')
  local entry = cjson.encode({at = now, actor = actor, action = action, item_id = id, post_id = post_id or nil,
                              policy = policy, previous = previous, outcome = outcome, detail = detail or ''})
  redis.call('XADD', prefix .. 'audit', 'MAXLEN', '~', audit_max, '*', 'entry', entry)
  local history = prefix .. 'history:' .. id
  redis.call('RPUSH', history, entry)
  redis.call('EXPIRE', history, ttl)
end

-- Give a claimed item back to its queue, at its original priority.
local function requeue(now, key, id, policy, holder, actor, action)
  redis.call('HSET', key, 'status', 'queued', 'reviewer', '', 'lease_until', '0')
  redis.call('ZREM', prefix .. 'leases:' .. policy, id)
  redis.call('ZADD', prefix .. 'queue:' .. policy, redis.call('HGET', key, 'priority'), id)
  audit(now, actor, action, id, policy, 'claimed by ' .. holder, 'queued', '')
end

-- Requeue the items whose lease ran out.
local function reap(now, policy)
  local leases = prefix .. 'leases:' .. policy
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now)) do
    local key = prefix .. 'item:' .. id
    if redis.call('HGET', key, 'status') == 'claimed' then
      requeue(now, key, id, policy, redis.call('HGET', key, 'reviewer'), 'system', 'lease_expired')
    else
      redis.call('ZREM', leases, id)
    end
  end
end

-- An item's hash key and its policy (nil when the item does not exist or has expired).
local function find(id)
  local key = prefix .. 'item:' .. id
  return key, redis.call('HGET', key, 'policy')
end

local function take(now, key, id, policy, reviewer, lease_ms, previous)
  local lease_until = now + tonumber(lease_ms)
  redis.call('HSET', key, 'status', 'claimed', 'reviewer', reviewer, 'lease_until', lease_until)
  redis.call('ZADD', prefix .. 'leases:' .. policy, lease_until, id)
  audit(now, reviewer, 'claim', id, policy, previous, 'claimed', '')
end
"""

# ARGV[4] item id, [5] policy, [6] priority, [7] item JSON, [8] JPEG or '', [9] the policy's decision,
# [10] post id.
# Returns 1 when added, 0 when the item already exists (a redelivered post is not queued twice).
ENQUEUE = _PRELUDE + """
local id, policy = ARGV[4], ARGV[5]
local key = prefix .. 'item:' .. id
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, 'data', ARGV[7], 'post_id', ARGV[10], 'policy', policy, 'priority', ARGV[6],
           'status', 'queued', 'reviewer', '', 'lease_until', '0')
redis.call('EXPIRE', key, ttl)
if ARGV[8] ~= '' then redis.call('SET', prefix .. 'image:' .. id, ARGV[8], 'EX', ttl) end
redis.call('ZADD', prefix .. 'queue:' .. policy, ARGV[6], id)
redis.call('SADD', prefix .. 'policies', policy)
audit(now_ms(), 'moderator', 'enqueue', id, policy, ARGV[9], 'queued', '')
return 1
"""

# ARGV[4] policy, [5] reviewer, [6] lease in ms. Returns the claimed item id, or nil when empty.
CLAIM_NEXT = _PRELUDE + """
local policy, reviewer = ARGV[4], ARGV[5]
local now = now_ms()
reap(now, policy)
local queue = prefix .. 'queue:' .. policy
while true do
  local popped = redis.call('ZPOPMIN', queue)
  if #popped == 0 then return false end
  local id = popped[1]
  local key = prefix .. 'item:' .. id
  if redis.call('HGET', key, 'status') == 'queued' then  -- skips items whose TTL ran out
    take(now, key, id, policy, reviewer, ARGV[6], 'queued')
    return id
  end
end
"""

# ARGV[4] item id, [5] reviewer, [6] lease in ms. Claims that item, or renews the caller's own lease.
# Returns 'ok', 'not_found', 'claimed' (by someone else) or 'decided'.
CLAIM_ONE = _PRELUDE + """
local id, reviewer = ARGV[4], ARGV[5]
local key, policy = find(id)
if not policy then return 'not_found' end
local now = now_ms()
reap(now, policy)
local status = redis.call('HGET', key, 'status')
if status == 'claimed' and redis.call('HGET', key, 'reviewer') == reviewer then
  take(now, key, id, policy, reviewer, ARGV[6], 'claimed by ' .. reviewer)
  return 'ok'
end
if status ~= 'queued' then return status end
redis.call('ZREM', prefix .. 'queue:' .. policy, id)
take(now, key, id, policy, reviewer, ARGV[6], 'queued')
return 'ok'
"""

# ARGV[4] item id, [5] actor, [6] '1' when the actor may release anyone's claim (admin).
# Returns 'ok', 'not_found', 'not_claimed' or 'not_yours'.
RELEASE = _PRELUDE + """
local id, actor = ARGV[4], ARGV[5]
local key, policy = find(id)
if not policy then return 'not_found' end
local now = now_ms()
reap(now, policy)
if redis.call('HGET', key, 'status') ~= 'claimed' then return 'not_claimed' end
local holder = redis.call('HGET', key, 'reviewer')
if holder ~= actor and ARGV[6] ~= '1' then return 'not_yours' end
requeue(now, key, id, policy, holder, actor, 'release')
return 'ok'
"""

# ARGV[4] item id, [5] reviewer, [6] ReviewOutcome JSON, [7] ReviewerDecision JSON (to the outbox),
# [8] LabelRecord JSON or '', [9] the previous decision, [10] the new one, [11] the reviewer's note.
# The caller must hold a live lease. Returns 'ok', 'not_found', 'decided', 'not_claimed' or 'lease_expired'.
DECIDE = _PRELUDE + """
local id, reviewer = ARGV[4], ARGV[5]
local key, policy = find(id)
if not policy then return 'not_found' end
local now = now_ms()
local status = redis.call('HGET', key, 'status')
if status == 'decided' then return 'decided' end
if status ~= 'claimed' or redis.call('HGET', key, 'reviewer') ~= reviewer then return 'not_claimed' end
if tonumber(redis.call('HGET', key, 'lease_until')) <= now then return 'lease_expired' end
redis.call('HSET', key, 'status', 'decided', 'lease_until', '0', 'outcome', ARGV[6])
redis.call('EXPIRE', key, ttl)
redis.call('EXPIRE', prefix .. 'image:' .. id, ttl)
redis.call('ZREM', prefix .. 'leases:' .. policy, id)
redis.call('HSET', prefix .. 'outbox', id, ARGV[7])
if ARGV[8] ~= '' then redis.call('HSET', prefix .. 'labels', id, ARGV[8]) end
audit(now, reviewer, 'decide', id, policy, ARGV[9], ARGV[10], ARGV[11])
return 'ok'
"""

# ARGV[4] policy. Returns expired leases of that policy to its queue (before listing it).
REAP = _PRELUDE + """
reap(now_ms(), ARGV[4])
return 1
"""
