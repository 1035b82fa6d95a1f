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
  redis.call('SREM', prefix .. 'held:' .. holder, id)
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

-- How many items a reviewer holds under a live lease (forgetting the ones they no longer hold).
local function held(now, reviewer)
  local set = prefix .. 'held:' .. reviewer
  local count = 0
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    local state = redis.call('HMGET', prefix .. 'item:' .. id, 'status', 'reviewer', 'lease_until')
    if state[1] == 'claimed' and state[2] == reviewer and tonumber(state[3]) > now then
      count = count + 1
    else
      redis.call('SREM', set, id)
    end
  end
  return count
end

-- Claim (renewals = 0) or renew (renewals = how many so far, this one included) an item's lease.
local function take(now, key, id, policy, reviewer, lease_ms, previous, renewals)
  local lease_until = now + tonumber(lease_ms)
  redis.call('HSET', key, 'status', 'claimed', 'reviewer', reviewer, 'lease_until', lease_until,
             'renewals', renewals)
  redis.call('ZADD', prefix .. 'leases:' .. policy, lease_until, id)
  redis.call('SADD', prefix .. 'held:' .. reviewer, id)
  audit(now, reviewer, 'claim', id, policy, previous, 'claimed', renewals > 0 and ('renewal ' .. renewals) or '')
end
"""

# ARGV[4] item id, [5] policy, [6] priority, [7] item JSON, [8] JPEG or '', [9] the policy's decision,
# [10] post id, [11] user id.
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
local user_items = prefix .. 'user:' .. ARGV[11]
redis.call('LPUSH', user_items, id)
redis.call('LTRIM', user_items, 0, 49)
redis.call('EXPIRE', user_items, ttl)
audit(now_ms(), 'moderator', 'enqueue', id, policy, ARGV[9], 'queued', '')
return 1
"""

# ARGV[4] policy, [5] reviewer, [6] lease in ms, [7] items one reviewer may hold.
# Returns the claimed item id, nil when the queue is empty, or 'too_many_claims'.
CLAIM_NEXT = _PRELUDE + """
local policy, reviewer = ARGV[4], ARGV[5]
local now = now_ms()
reap(now, policy)
if held(now, reviewer) >= tonumber(ARGV[7]) then return 'too_many_claims' end
local queue = prefix .. 'queue:' .. policy
while true do
  local popped = redis.call('ZPOPMIN', queue)
  if #popped == 0 then return false end
  local id = popped[1]
  local key = prefix .. 'item:' .. id
  if redis.call('HGET', key, 'status') == 'queued' then  -- skips items whose TTL ran out
    take(now, key, id, policy, reviewer, ARGV[6], 'queued', 0)
    return id
  end
end
"""

# ARGV[4] item id, [5] reviewer, [6] lease in ms, [7] items one reviewer may hold, [8] renewals allowed.
# Claims that item, or renews the caller's own lease.
# Returns 'ok', 'not_found', 'claimed' (by someone else), 'decided', 'too_many_claims' or 'renewal_limit'.
CLAIM_ONE = _PRELUDE + """
local id, reviewer = ARGV[4], ARGV[5]
local key, policy = find(id)
if not policy then return 'not_found' end
local now = now_ms()
reap(now, policy)
local status = redis.call('HGET', key, 'status')
if status == 'claimed' and redis.call('HGET', key, 'reviewer') == reviewer then
  local renewals = tonumber(redis.call('HGET', key, 'renewals') or '0') + 1
  if renewals > tonumber(ARGV[8]) then return 'renewal_limit' end
  take(now, key, id, policy, reviewer, ARGV[6], 'claimed by ' .. reviewer, renewals)
  return 'ok'
end
if status ~= 'queued' then return status end
if held(now, reviewer) >= tonumber(ARGV[7]) then return 'too_many_claims' end
redis.call('ZREM', prefix .. 'queue:' .. policy, id)
take(now, key, id, policy, reviewer, ARGV[6], 'queued', 0)
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
redis.call('SREM', prefix .. 'held:' .. reviewer, id)
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
