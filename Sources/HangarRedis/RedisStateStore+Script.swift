extension RedisStateStore {
    /// The Lua script every write runs (a save, a delete, a whole transaction), atomically on the server.
    ///
    /// It keeps Dapr's layout (`state/redis/redis.go`): an item is a hash with `data` (the value's bytes) and
    /// `version` (the ETag, an integer that `HINCRBY` raises by one on each write and that starts again at 1 after
    /// a delete), and `first-write` set to 0 by a first-write save; a key of another type is replaced, as Dapr's
    /// script does. Data written by Dapr is read and written in place, and Dapr reads what this writes.
    ///
    /// Where it departs from Dapr's scripts, it does so to keep the contract every Hangar store keeps (the
    /// conformance suite), which Dapr's own Redis store breaks:
    /// - **All or none.** Dapr sends a transaction as `MULTI`, one `EVAL` per operation and `EXEC`: an ETag
    ///   mismatch fails that operation and the others are applied. Here the script checks every operation first
    ///   (against the versions the earlier operations of the same call leave) and writes only if all pass.
    /// - **First-write without an ETag fails on an existing key**, whatever the `first-write` flag says; Dapr's
    ///   accepts it on a key first written without first-write. The flag is written for Dapr's sake but not read.
    /// - **Deleting a missing key with an ETag is a mismatch** (Dapr's deletes it, that is, succeeds).
    /// - **TTL in the same step**: `PEXPIRE` for a save with a TTL, `PERSIST` for one without (Dapr sends them as
    ///   separate commands after the script, and leaves an earlier TTL in place when a save gives none).
    ///
    /// **Byte accounting** (the tenant's `maxStateBytes`) is kept in Redis, in the same step, so that every node
    /// sharing the server counts the same totals and concurrent writers cannot overshoot a limit. Per partition
    /// (`StatePartition`, a tenant) there are three keys (`AccountingKeys`): a hash of the partition's total
    /// (`bytes`) and of how many times it changed (`writes`, which orders replies that arrive out of order on
    /// several connections), a sorted set
    /// of its items that have a TTL (scored by their expiry, in the server's milliseconds) and a hash of those
    /// items' counted sizes. An item counts its physical key's UTF-8 bytes plus its value's bytes, as in every
    /// store. An item with a TTL counts until it is removed from the sorted set (`usageScript`, or a write over
    /// the limit, which first removes its partition's expired items): Redis's own expiry does not tell the count.
    /// An item without a TTL counts what it holds (`HSTRLEN data`), so that an overwrite or delete takes away
    /// what was there. Data not written by Hangar (Dapr's, or an older hangard's) was never added: taking it away
    /// could leave a total below zero, which is kept at zero.
    ///
    /// `KEYS[1 ... n]` are the operations' keys, then three per partition (`AccountingKeys`: total, TTL index,
    /// sizes), then the set of partitions. `ARGV[1]` is n; operation i's eight fields follow at `ARGV[8i-6 ...
    /// 8i+1]`: its `op` (`s` save, `d` delete), `etag` (empty for none; an integer otherwise, checked before
    /// sending), concurrency `mode` (`u` unspecified, `f` first-write, `l` last-write), `ttl` in milliseconds
    /// (empty for none), `value`, partition index (1-based), the bytes of its physical key and its byte limit
    /// (empty for none). Then each partition's name.
    ///
    /// Operations are checked in order against the versions and totals the earlier ones leave. Replies with each
    /// save's new version (0 for a delete) followed by each partition's `{total, writes}` after the write (-1 when
    /// the write left it unchanged: the total is then not read, unless a limit had to be checked); or, having written
    /// nothing, with the error `HANGAR_ETAG_MISMATCH <i>` for the first operation that fails its ETag check, or
    /// `HANGAR_BYTE_LIMIT <i> <usage>` for the first save that grows a partition above its limit (`usage`: what
    /// it would have held).
    static let writeScript = """
        local n = tonumber(ARGV[1])
        local m = (#KEYS - n - 1) / 3
        local now
        local function clock()
          if now == nil then
            local t = redis.call('TIME')
            now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
          end
          return now
        end
        -- Per partition: changes not yet added to its total, changes added (undone if the write is refused),
        -- and the total as the last HINCRBY left it.
        local pending, applied, current, purged = {}, {}, {}, {}
        for j = 1, m do pending[j] = 0; applied[j] = 0 end
        local function fail(reply)
          for j = 1, m do
            if applied[j] ~= 0 then redis.call('HINCRBY', KEYS[n + 3 * j - 2], 'bytes', -applied[j]) end
          end
          return redis.error_reply(reply)
        end
        local function purge(j, items)
          local index, sizes = KEYS[n + 3 * j - 1], KEYS[n + 3 * j]
          local bytes = 0
          for _, key in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', clock())) do
            if items[key] == nil then
              bytes = bytes + tonumber(redis.call('HGET', sizes, key) or '0')
              redis.call('ZREM', index, key)
              redis.call('HDEL', sizes, key)
            end
          end
          return bytes
        end
        local items = {}
        for i = 1, n do
          local b = 8 * (i - 1)
          local key, op, etag, mode = KEYS[i], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
          local j, keyBytes = tonumber(ARGV[b + 7]), tonumber(ARGV[b + 8])
          local state = items[key]
          if state == nil then
            local kind = redis.call('TYPE', key)['ok']
            state = {kind = kind, version = false, size = 0, timed = false}
            if kind == 'hash' then
              state.version = redis.call('HGET', key, 'version') or ''
              state.size = redis.call('HSTRLEN', key, 'data') + keyBytes
            elseif kind == 'string' then
              state.version = ''
              state.size = redis.call('STRLEN', key) + keyBytes
            elseif kind ~= 'none' then
              state.version = ''
            else
              -- Gone, but perhaps expired and still counted: its recorded size is what it holds.
              local recorded = redis.call('HGET', KEYS[n + 3 * j], key)
              if recorded then
                state.size = tonumber(recorded)
                state.timed = true
              end
            end
            items[key] = state
          end
          local current_version = state.version
          if mode ~= 'l' then
            if etag ~= '' then
              if current_version == false or (current_version ~= '' and current_version ~= etag) then
                return fail('HANGAR_ETAG_MISMATCH ' .. i)
              end
            elseif op == 's' and mode == 'f' and current_version ~= false then
              return fail('HANGAR_ETAG_MISMATCH ' .. i)
            end
          end
          local size = 0
          if op == 's' then
            state.version = tostring((tonumber(current_version) or 0) + 1)
            size = keyBytes + string.len(ARGV[b + 6])
          else
            state.version = false
          end
          local delta = size - state.size
          state.size = size
          pending[j] = pending[j] + delta
          local limit = ARGV[b + 9]
          if delta > 0 and limit ~= '' then
            limit = tonumber(limit)
            current[j] = redis.call('HINCRBY', KEYS[n + 3 * j - 2], 'bytes', pending[j])
            applied[j] = applied[j] + pending[j]
            pending[j] = 0
            if current[j] > limit and not purged[j] then
              purged[j] = true
              local freed = purge(j, items)
              -- Kept even if this write is refused: those items are gone either way.
              if freed > 0 then current[j] = redis.call('HINCRBY', KEYS[n + 3 * j - 2], 'bytes', -freed) end
            end
            if current[j] > limit then return fail('HANGAR_BYTE_LIMIT ' .. i .. ' ' .. current[j]) end
          end
        end
        local result = {}
        for i = 1, n do
          local b = 8 * (i - 1)
          local key = KEYS[i]
          local state = items[key]
          local j = tonumber(ARGV[b + 7])
          local index, counted = KEYS[n + 3 * j - 1], KEYS[n + 3 * j]
          local ttl = ARGV[b + 5]
          if ARGV[b + 2] == 's' then
            local before = state.kind
            if before ~= 'none' and before ~= 'hash' then redis.call('DEL', key) end
            redis.call('HSET', key, 'data', ARGV[b + 6])
            if ARGV[b + 4] == 'f' then redis.call('HSET', key, 'first-write', 0) end
            result[i] = redis.call('HINCRBY', key, 'version', 1)
            if ttl ~= '' then
              redis.call('PEXPIRE', key, ttl)
              redis.call('ZADD', index, clock() + tonumber(ttl), key)
              redis.call('HSET', counted, key, string.len(ARGV[b + 6]) + tonumber(ARGV[b + 8]))
              state.timed = true
            else
              -- A key that had a TTL (PERSIST says so) may be recorded with it; one that was gone only if
              -- it was still counted after it expired.
              if before == 'hash' and redis.call('PERSIST', key) == 1 then state.timed = true end
              if state.timed then
                redis.call('ZREM', index, key)
                redis.call('HDEL', counted, key)
                state.timed = false
              end
            end
            state.kind = 'hash'
          else
            if state.kind ~= 'none' then
              redis.call('DEL', key)
              state.timed = true
            end
            if state.timed then
              redis.call('ZREM', index, key)
              redis.call('HDEL', counted, key)
              state.timed = false
            end
            state.kind = 'none'
            result[i] = 0
          end
        end
        for j = 1, m do
          local counter = KEYS[n + 3 * j - 2]
          if pending[j] ~= 0 then
            current[j] = redis.call('HINCRBY', counter, 'bytes', pending[j])
            applied[j] = applied[j] + pending[j]
          end
          if applied[j] == 0 then
            result[n + j] = -1
          else
            local after = current[j]
            local writes = redis.call('HINCRBY', counter, 'writes', 1)
            local name = ARGV[1 + 8 * n + j]
            if after <= 0 then
              if after < 0 then redis.call('HSET', counter, 'bytes', 0) end
              if redis.call('ZCARD', KEYS[n + 3 * j - 1]) == 0 then redis.call('SREM', KEYS[#KEYS], name) end
              after = 0
            elseif after - applied[j] <= 0 then
              redis.call('SADD', KEYS[#KEYS], name)
            end
            result[n + j] = {after, writes}
          end
        end
        return result
        """

    /// The Lua script that removes expired items from the accounting and reads the totals (`refreshUsage`):
    /// `KEYS` are three per partition (`AccountingKeys`), `ARGV[1]` `1` to remove expired items (at most
    /// `ARGV[2]` per partition) or `0` only to read. Replies `{removed, {{total, writes} per partition}}`; a partition
    /// left with nothing is taken out of the set of partitions (`KEYS`' last, `ARGV[3 ...]` the names).
    static let usageScript = """
        local m = (#KEYS - 1) / 3
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local removed, totals = 0, {}
        for j = 1, m do
          local counter, index, sizes = KEYS[3 * j - 2], KEYS[3 * j - 1], KEYS[3 * j]
          local total = tonumber(redis.call('HGET', counter, 'bytes') or '0')
          if ARGV[1] == '1' then
            local gone = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
            for _, key in ipairs(gone) do
              total = total - tonumber(redis.call('HGET', sizes, key) or '0')
              redis.call('ZREM', index, key)
              redis.call('HDEL', sizes, key)
            end
            removed = removed + #gone
            if #gone > 0 then
              total = math.max(0, total)
              redis.call('HSET', counter, 'bytes', total)
              redis.call('HINCRBY', counter, 'writes', 1)
            end
          end
          if total <= 0 and redis.call('ZCARD', index) == 0 then redis.call('SREM', KEYS[#KEYS], ARGV[2 + j]) end
          totals[j] = {total, tonumber(redis.call('HGET', counter, 'writes') or '0')}
        end
        return {removed, totals}
        """

    /// The Lua script a read runs: the item's hash and its remaining time to live (`PTTL`, negative when it has
    /// none) in one round trip, as `{1, hash fields and values, pttl}`; for a key of another type, Dapr's fallback
    /// for values stored as plain strings, `{0, GET's value, pttl}` (an error when it is not a string either).
    static let readScript = """
        local hash = redis.pcall('HGETALL', KEYS[1])
        if type(hash) == 'table' and hash['err'] then
          return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
        end
        return {1, hash, redis.call('PTTL', KEYS[1])}
        """

    /// The error the write script answers for a failed check: this prefix, a space and the operation's index (1-based).
    static let mismatchPrefix = "HANGAR_ETAG_MISMATCH"
    /// The error the write script answers for a save over its partition's byte limit: this prefix, the operation's
    /// index (1-based) and the bytes the partition would have held.
    static let byteLimitPrefix = "HANGAR_BYTE_LIMIT"
}
