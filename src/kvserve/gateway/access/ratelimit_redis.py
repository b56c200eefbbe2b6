"""Limits shared by every gateway on one Redis: one Lua script per admission, one per settle.

Both scripts read Redis' own clock (TIME), so gateways with skewed clocks still agree.
Keys (all under the configured prefix):
  rl:key:<id> / rl:tenant:<name>   hash: r, rts (request bucket), t, tts (token bucket)
  cc:<id>                          sorted set: open requests (slot -> admission time)
  day:<id>                         hash: day, used (tokens charged today)
  usage:<tenant>|<key id>|<model>  hash: requests, prompt_tokens, completion_tokens, cache_hits
  usage                            set of the usage hashes
"""

from __future__ import annotations

from kvserve.gateway.access.ratelimit import Charge, Decision, Usage, usage_row
from kvserve.gateway.store.redis_link import RedisLink

COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function level(key, f, cap)
  if cap <= 0 then return 0 end
  local v = redis.call('HMGET', key, f, f .. 'ts')
  if not v[1] then return cap end
  return math.min(cap, tonumber(v[1]) + (now - tonumber(v[2])) * cap / 60)
end
local function save(key, f, cap, value)
  if cap <= 0 then return end
  redis.call('HSET', key, f, tostring(value), f .. 'ts', tostring(now))
  redis.call('EXPIRE', key, 600)
end
"""

ADMIT = COMMON + """
local rpm, tpm, trpm, ttpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local conc, budget, cost, lease = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[9])
local day = math.floor(now / 86400)
local kr, kt = level(KEYS[1], 'r', rpm), level(KEYS[1], 't', tpm)
local tr, tt = level(KEYS[2], 'r', trpm), level(KEYS[2], 't', ttpm)
local function wait(need, have, cap) return math.ceil((need - have) * 60000 / cap) end
local code, retry = 0, 0
if (tpm > 0 and cost > tpm) or (ttpm > 0 and cost > ttpm) then code = 7
elseif conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - lease)
  if redis.call('ZCARD', KEYS[3]) >= conc then code = 1; retry = 1000 end
end
if code ~= 0 then
elseif rpm > 0 and kr < 1 then code = 2; retry = wait(1, kr, rpm)
elseif tpm > 0 and kt < cost then code = 3; retry = wait(cost, kt, tpm)
elseif trpm > 0 and tr < 1 then code = 4; retry = wait(1, tr, trpm)
elseif ttpm > 0 and tt < cost then code = 5; retry = wait(cost, tt, ttpm)
end
local used = 0
if budget >= 0 then
  local d = redis.call('HMGET', KEYS[4], 'day', 'used')
  if tonumber(d[1]) == day then used = tonumber(d[2]) end
  if code == 0 and used >= budget then code = 6; retry = math.ceil(((day + 1) * 86400 - now) * 1000) end
end
if code == 0 then
  kr, kt, tr, tt = kr - 1, kt - cost, tr - 1, tt - cost
  save(KEYS[1], 'r', rpm, kr); save(KEYS[1], 't', tpm, kt)
  save(KEYS[2], 'r', trpm, tr); save(KEYS[2], 't', ttpm, tt)
  if conc > 0 then redis.call('ZADD', KEYS[3], now, ARGV[8]); redis.call('EXPIRE', KEYS[3], math.ceil(lease)) end
  if budget >= 0 then
    redis.call('HSET', KEYS[4], 'day', day, 'used', used + cost); redis.call('EXPIRE', KEYS[4], 172800)
  end
end
local function reset(have, cap) if cap <= 0 then return 0 end return math.ceil((cap - have) * 60000 / cap) end
return {code, math.floor(kr), math.floor(kt), reset(kr, rpm), reset(kt, tpm), retry, day}
"""

SETTLE = COMMON + """
local tpm, ttpm, delta = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if delta ~= 0 then
  if tpm > 0 then save(KEYS[1], 't', tpm, math.min(tpm, level(KEYS[1], 't', tpm) - delta)) end
  if ttpm > 0 then save(KEYS[2], 't', ttpm, math.min(ttpm, level(KEYS[2], 't', ttpm) - delta)) end
  if tonumber(redis.call('HGET', KEYS[4], 'day')) == tonumber(ARGV[5]) then
    redis.call('HINCRBY', KEYS[4], 'used', delta)
  end
end
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('HINCRBY', KEYS[5], 'requests', 1)
redis.call('HINCRBY', KEYS[5], 'prompt_tokens', ARGV[6])
redis.call('HINCRBY', KEYS[5], 'completion_tokens', ARGV[7])
redis.call('HINCRBY', KEYS[5], 'cache_hits', ARGV[8])
redis.call('SADD', KEYS[6], ARGV[9])
return 0
"""

USAGE_FIELDS = (b"requests", b"prompt_tokens", b"completion_tokens", b"cache_hits")


class RedisLimiter:
    """The Limiter contract on Redis; raises RedisUnavailable when Redis is down."""

    def __init__(self, link: RedisLink, lease_s: float) -> None:
        self.link = link
        self.lease_s = lease_s
        self.admit_script = link.script(ADMIT)
        self.settle_script = link.script(SETTLE)

    def _keys(self, charge: Charge) -> list[str]:
        k = self.link.key
        usage = f"{charge.tenant}|{charge.key_id}|{charge.model}"
        return [k("rl", "key", charge.key_id), k("rl", "tenant", charge.tenant), k("cc", charge.key_id),
                k("day", charge.key_id), k("usage", usage), k("usage")]

    async def admit(self, charge: Charge) -> Decision:
        k, t = charge.limits, charge.tenant_limits
        budget = -1 if k.daily_tokens is None else k.daily_tokens
        args = [k.requests_per_minute, k.tokens_per_minute, t.requests_per_minute, t.tokens_per_minute,
                k.concurrency, budget, charge.tokens, charge.slot, self.lease_s]
        keys = self._keys(charge)[:4]
        code, rr, rt, reset_r, reset_t, retry, day = await self.link.call(
            "admit", lambda: self.admit_script(keys=keys, args=args))
        return Decision(int(code), int(rr), int(rt), reset_r / 1000, reset_t / 1000, retry / 1000, int(day))

    async def settle(self, charge: Charge, decision: Decision, usage: Usage) -> None:
        delta = usage.billed - (charge.tokens if decision.admitted and decision.enforced and charge.limited else 0)
        keys = self._keys(charge)
        args = [charge.limits.tokens_per_minute, charge.tenant_limits.tokens_per_minute, delta, charge.slot,
                decision.day, usage.prompt_tokens, usage.completion_tokens, int(usage.cache_hit),
                keys[4]]
        await self.link.call("settle", lambda: self.settle_script(keys=keys, args=args))

    async def usage(self) -> list[dict[str, object]]:
        names = sorted(await self.link.call("usage", lambda: self.link.client.smembers(self.link.key("usage"))))
        pipe = self.link.client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(name, *USAGE_FIELDS)
        rows = await self.link.call("usage", pipe.execute)
        out, skip = [], len(self.link.key("usage")) + 1
        for name, values in zip(names, rows):
            tenant, key_id, model = name.decode()[skip:].split("|", 2)
            out.append(usage_row(tenant, key_id, model, *(int(v or 0) for v in values)))
        return out

    async def close(self) -> None:
        return None
