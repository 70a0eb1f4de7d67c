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
    /// `KEYS[i]` is operation i's key and `ARGV[5i-4 ... 5i]` its `op` (`s` save, `d` delete), `etag` (empty for
    /// none; an integer otherwise, checked before sending), concurrency `mode` (`u` unspecified, `f` first-write,
    /// `l` last-write), `ttl` in milliseconds (empty for none) and `value`. Replies with each save's new version (0
    /// for a delete), or with the error `HANGAR_ETAG_MISMATCH <i>` for the first operation that fails its check,
    /// having written nothing.
    static let writeScript = """
        local versions = {}
        local function version(key)
          local known = versions[key]
          if known ~= nil then return known end
          local kind = redis.call('TYPE', key)['ok']
          local current
          if kind == 'none' then current = false
          elseif kind ~= 'hash' then current = ''
          else current = redis.call('HGET', key, 'version') or '' end
          versions[key] = current
          return current
        end
        for i = 1, #KEYS do
          local b = 5 * (i - 1)
          local op, etag, mode = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
          local current = version(KEYS[i])
          if mode ~= 'l' then
            if etag ~= '' then
              if current == false or (current ~= '' and current ~= etag) then
                return redis.error_reply('HANGAR_ETAG_MISMATCH ' .. i)
              end
            elseif op == 's' and mode == 'f' and current ~= false then
              return redis.error_reply('HANGAR_ETAG_MISMATCH ' .. i)
            end
          end
          if op == 's' then
            versions[KEYS[i]] = tostring((tonumber(current) or 0) + 1)
          else
            versions[KEYS[i]] = false
          end
        end
        local result = {}
        for i = 1, #KEYS do
          local b = 5 * (i - 1)
          local key = KEYS[i]
          if ARGV[b + 1] == 's' then
            local kind = redis.call('TYPE', key)['ok']
            if kind ~= 'none' and kind ~= 'hash' then redis.call('DEL', key) end
            redis.call('HSET', key, 'data', ARGV[b + 5])
            if ARGV[b + 3] == 'f' then redis.call('HSET', key, 'first-write', 0) end
            result[i] = redis.call('HINCRBY', key, 'version', 1)
            if ARGV[b + 4] ~= '' then redis.call('PEXPIRE', key, ARGV[b + 4]) else redis.call('PERSIST', key) end
          else
            redis.call('DEL', key)
            result[i] = 0
          end
        end
        return result
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
}
