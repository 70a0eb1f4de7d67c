import Foundation
import HangarComponents
import NIOCore
import HangarSync

/// Byte accounting of `pubsub.redis`, kept in Redis so that every hangard sharing the server counts the same bytes
/// and checks the same limits (the tenant's `maxPubsubBytes`, the component's `maxRetainedBytes`).
///
/// A message counts `PubSubMessage.byteCount` from its publish until it is removed: by `trim` (once every consumer
/// group has acknowledged it) or by Dapr's retention (`maxLenApprox`, `streamTTL`), which Hangar runs itself, exactly,
/// in the publish's script so that the counters hear of every entry it removes. Each entry Hangar adds carries its
/// count in a field of its own (`byteCount`, which Dapr's reader ignores like `contentType`); removals subtract what
/// that field says. An entry without it (written by a daprd, or by a Hangar before accounting) was never counted and
/// is removed for nothing; the counters are clamped at 0 besides, and a stream found empty or gone holds nothing.
///
/// The counters (`RedisPubSubKeys`) change in the same script as the stream, so they are exact whatever the number of
/// nodes; each node reads them through a cache (`RedisPubSubUsage`) refreshed by its own scripts' replies and by a
/// periodic snapshot, so that the synchronous, frequent readers (`retainedBytes(inPartition:)` on every publish's
/// metrics) never wait for Redis.
enum RedisPubSubKeys {
    // Hangar's streams (`<namespace>||<topic>`) and state keys (`<namespace>||<app>||<key>`, `<app>||<key>`) always
    // contain `||`; none of these names does (a partition is the part of a topic before its first `||`), so they
    // never collide with a stream or a state key on the same server.

    /// Hash: partition → a version incremented with every change of its counters (never deleted, so that replies
    /// can be ordered; see `RedisPubSubUsage`).
    static let versions = "hangar:pubsub:versions"
    /// Hash: partition → the bytes its topics hold.
    static let partitions = "hangar:pubsub:partitions"
    /// String: the bytes every topic holds (what `maxRetainedBytes` is checked against).
    static let total = "hangar:pubsub:total"
    /// Hash per partition: topic → the bytes it holds.
    static let topicsPrefix = "hangar:pubsub:topics:"

    static func topics(_ partition: String) -> String { topicsPrefix + partition }

    /// The keys of a script that changes one topic's counters: the shared three, the stream, the partition's hash.
    static func keys(topic: String) -> [RESPArgument] {
        [
            .string(versions), .string(partitions), .string(total), .string(topic),
            .string(topics(PubSubPartition.of(topic))),
        ]
    }
}

/// A Lua script run by its SHA-1 once the server told it (`SCRIPT LOAD`), sent whole (`EVAL`) before that and
/// whenever the server has forgotten it (`NOSCRIPT`: a restart, `SCRIPT FLUSH`).
final class RedisPubSubScript: Sendable {
    let body: String
    let sha = Locked<String?>(nil)

    init(_ body: String) { self.body = body }
}

/// The counters as this node last saw them: per partition, its bytes, its topics' bytes and the version they were
/// read at. Replies of concurrent scripts arrive in any order (they run on several connections): an update is taken
/// only when its version is newer than the one held, so the cache ends as Redis is. A snapshot (`read`) is taken
/// even when older for a partition no reply updated since it was asked for: the server's versions went back (it
/// lost its data), and the snapshot is the truth.
struct RedisPubSubUsage {
    struct Partition {
        var bytes = 0
        var version: Int64 = -1
        /// The local update count when `version` was set.
        var stamp: UInt64 = 0
        var topics: [String: (bytes: Int, version: Int64)] = [:]
    }

    var partitions: [String: Partition] = [:]
    /// Local updates so far.
    var stamp: UInt64 = 0

    /// A script's reply for one topic: its bytes, its partition's, and the partition's version after the script.
    mutating func update(topic: String, bytes: Int, partitionBytes: Int, version: Int64) {
        stamp += 1
        let name = PubSubPartition.of(topic)
        var partition = partitions[name, default: Partition()]
        if version > partition.topics[topic]?.version ?? -1 { partition.topics[topic] = (bytes, version) }
        if version > partition.version {
            partition.bytes = partitionBytes
            partition.version = version
            partition.stamp = stamp
        }
        partitions[name] = partition
    }

    /// A snapshot of every partition (`RedisPubSub.usageScript`), asked for when the stamp was `asked`.
    mutating func read(_ snapshot: [String: Partition], asked: UInt64) {
        stamp += 1
        for name in Set(partitions.keys).union(snapshot.keys) {
            let held = partitions[name]
            var read = snapshot[name] ?? Partition(version: 0)
            guard read.version >= held?.version ?? -1 || (held?.stamp ?? 0) <= asked else { continue }
            read.stamp = stamp
            // A topic gone from the snapshot keeps its version, so that an older reply does not bring it back.
            for (topic, old) in held?.topics ?? [:] where read.topics[topic] == nil && old.version <= read.version {
                read.topics[topic] = (0, read.version)
            }
            partitions[name] = read
        }
    }

    var byTopic: [String: Int] {
        var result: [String: Int] = [:]
        for partition in partitions.values {
            for (topic, usage) in partition.topics where usage.bytes > 0 { result[topic] = usage.bytes }
        }
        return result
    }

    var byPartition: [String: Int] { partitions.compactMapValues { $0.bytes > 0 ? $0.bytes : nil } }

    /// The topics of `partition` with bytes (nil: of every partition).
    func topics(in partition: String?) -> [String] {
        let chosen = partition.map { partitions[$0].map { [$0] } ?? [] } ?? Array(partitions.values)
        return chosen.flatMap { $0.topics.filter { $0.value.bytes > 0 }.keys }
    }
}

extension RedisPubSub {
    // MARK: Scripts

    /// Lua shared by the scripts. `KEYS` are `RedisPubSubKeys.keys(topic:)`: 1 versions, 2 partitions, 3 total,
    /// 4 the stream, 5 the partition's topics.
    ///
    /// `counted(entry)`: what an entry counts (its `byteCount` field; 0 without one). `removeOldest(last, count)`:
    /// removes the stream's oldest entries up to `last` (an `XRANGE` end: `+`, or `(<id>` for below an id), at
    /// most `count`, exactly (`XTRIM MINID` to the first one kept); returns how many, the bytes they counted, and
    /// whether more remain up to `last`. `account(topic, partition, delta, empty)`: adds `delta` to the topic's,
    /// partition's and total's counters, clamped at 0 (and the topic's set to 0 when `empty`), bumps the
    /// partition's version and returns the topic's bytes, the partition's, the version and the total.
    static let luaHelpers = """
        local function counted(entry)
          local fields = entry[2]
          for k = 1, #fields, 2 do
            if fields[k] == 'byteCount' then return tonumber(fields[k + 1]) or 0 end
          end
          return 0
        end
        local function removeOldest(last, count)
          if count <= 0 then return 0, 0, false end
          local old = redis.call('XRANGE', KEYS[4], '-', last, 'COUNT', count + 1)
          local n = math.min(#old, count)
          if n == 0 then return 0, 0, false end
          local freed = 0
          for k = 1, n do freed = freed + counted(old[k]) end
          if #old > count then
            redis.call('XTRIM', KEYS[4], 'MINID', old[count + 1][1])
            return n, freed, true
          end
          if last == '+' then
            redis.call('XTRIM', KEYS[4], 'MAXLEN', 0)
          else
            redis.call('XTRIM', KEYS[4], 'MINID', string.sub(last, 2))
          end
          return n, freed, false
        end
        local function setCount(key, field, value)
          if value > 0 then
            redis.call('HSET', key, field, string.format('%.0f', value))
          else
            redis.call('HDEL', key, field)
          end
        end
        local function account(topic, partition, delta, empty)
          local had = tonumber(redis.call('HGET', KEYS[5], topic) or '0')
          local now = had + delta
          if empty or now < 0 then now = 0 end
          delta = now - had
          setCount(KEYS[5], topic, now)
          local bytes = math.max(0, tonumber(redis.call('HGET', KEYS[2], partition) or '0') + delta)
          setCount(KEYS[2], partition, bytes)
          local total = math.max(0, tonumber(redis.call('GET', KEYS[3]) or '0') + delta)
          if total > 0 then
            redis.call('SET', KEYS[3], string.format('%.0f', total))
          else
            redis.call('DEL', KEYS[3])
          end
          local version = redis.call('HINCRBY', KEYS[1], partition, 1)
          return now, bytes, version, total
        end

        """

    /// Publishes messages to one stream, all or none, checking the limits and counting their bytes.
    ///
    /// `ARGV`: 1 topic, 2 partition, 3 the publish's bytes, 4 the partition limit (-1: none), 5 `maxRetainedBytes`
    /// (-1: none), 6 retention (`''`, `maxlen` or `minid`), 7 its value (the length; the id below which entries
    /// go), 8 the most entries retention removes, then per message its field count and fields (with `byteCount`).
    /// Refused (nothing stored): `HANGAR_PARTITION_FULL <usage>`, `HANGAR_FULL <usage>`. Returns the ids, then
    /// `account`'s four figures.
    static let publishScript = RedisPubSubScript(
        luaHelpers + """
            local bytes = tonumber(ARGV[3])
            local held = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
            local limit = tonumber(ARGV[4])
            if limit >= 0 and held + bytes > limit then
              return redis.error_reply('HANGAR_PARTITION_FULL ' .. string.format('%.0f', held + bytes))
            end
            held = tonumber(redis.call('GET', KEYS[3]) or '0')
            limit = tonumber(ARGV[5])
            if limit >= 0 and held + bytes > limit then
              return redis.error_reply('HANGAR_FULL ' .. string.format('%.0f', held + bytes))
            end
            local ids = {}
            local i = 9
            while i <= #ARGV do
              local n = tonumber(ARGV[i])
              local args = {'XADD', KEYS[4], '*'}
              for j = i + 1, i + n do args[#args + 1] = ARGV[j] end
              ids[#ids + 1] = redis.call(unpack(args))
              i = i + n + 1
            end
            local freed = 0
            local budget = tonumber(ARGV[8])
            if ARGV[6] == 'maxlen' then
              local excess = redis.call('XLEN', KEYS[4]) - tonumber(ARGV[7])
              local _
              _, freed = removeOldest('+', math.min(excess, budget))
            elseif ARGV[6] == 'minid' then
              local _
              _, freed = removeOldest('(' .. ARGV[7], budget)
            end
            local topic, partition, version, total = account(ARGV[1], ARGV[2], bytes - freed, false)
            return {ids, topic, partition, version, total}
            """)

    /// Removes a stream's entries below an id, at most a batch, and subtracts what they counted; a stream found
    /// empty or gone has its counter zeroed. `ARGV`: 1 topic, 2 partition, 3 the id below which entries go (`''`:
    /// none), 4 the batch. Returns how many went, `account`'s four figures, and 1 when more remain below the id.
    /// A key that is not a stream is left alone.
    static let trimScript = RedisPubSubScript(
        luaHelpers + """
            local kind = redis.call('TYPE', KEYS[4])['ok']
            if kind ~= 'stream' and kind ~= 'none' then return {0, -1, -1, -1, -1, 0} end
            local removed, freed, more = 0, 0, false
            if ARGV[3] ~= '' and kind == 'stream' then
              removed, freed, more = removeOldest('(' .. ARGV[3], tonumber(ARGV[4]))
            end
            local empty = kind == 'none' or redis.call('XLEN', KEYS[4]) == 0
            local topic, partition, version, total = account(ARGV[1], ARGV[2], -freed, empty)
            return {removed, topic, partition, version, total, more and 1 or 0}
            """)

    /// Every partition's counters, for the cache: `{{partition, version, bytes, {topic, bytes, ...}}, ...}`. A
    /// counted topic whose stream is empty or gone (deleted, or lost with the server's data while its counters were
    /// not) is zeroed first. `KEYS`: 1 versions, 2 partitions, 3 total; `ARGV[1]`: the topics' hash prefix.
    static let usageScript = RedisPubSubScript(
        """
        local result = {}
        local versions = redis.call('HGETALL', KEYS[1])
        for i = 1, #versions, 2 do
          local partition = versions[i]
          local key = ARGV[1] .. partition
          local topics = redis.call('HGETALL', key)
          local kept = {}
          local gone = 0
          for j = 1, #topics, 2 do
            local kind = redis.call('TYPE', topics[j])['ok']
            if kind == 'none' or (kind == 'stream' and redis.call('XLEN', topics[j]) == 0) then
              gone = gone + tonumber(topics[j + 1])
              redis.call('HDEL', key, topics[j])
            else
              kept[#kept + 1] = topics[j]
              kept[#kept + 1] = topics[j + 1]
            end
          end
          local bytes = tonumber(redis.call('HGET', KEYS[2], partition) or '0')
          local version = tonumber(versions[i + 1])
          if gone > 0 then
            bytes = math.max(0, bytes - gone)
            if bytes > 0 then
              redis.call('HSET', KEYS[2], partition, string.format('%.0f', bytes))
            else
              redis.call('HDEL', KEYS[2], partition)
            end
            local total = math.max(0, tonumber(redis.call('GET', KEYS[3]) or '0') - gone)
            if total > 0 then
              redis.call('SET', KEYS[3], string.format('%.0f', total))
            else
              redis.call('DEL', KEYS[3])
            end
            version = redis.call('HINCRBY', KEYS[1], partition, 1)
          end
          result[#result + 1] = {partition, version, bytes, kept}
        end
        return result
        """)

    /// The most entries one script removes (trim's batch, and retention's on a publish): a script blocks the
    /// server while it runs.
    static let removalBatch = 1000

    // MARK: Running scripts

    /// Runs a script (`EVALSHA`, or `EVAL` until its SHA-1 is known or when the server forgot it), noting whether
    /// Redis answers. Error replies of Hangar's own (`HANGAR_...`) come back as `RedisError.server`; the others as
    /// `pubsubError` maps them.
    func evaluate(
        _ script: RedisPubSubScript, keys: [RESPArgument], arguments: [RESPArgument], orderedBy key: String? = nil
    ) -> EventLoopFuture<RESPValue> {
        let operands: [RESPArgument] = [.integer(Int64(keys.count))] + keys + arguments
        let deadline = NIODeadline.now() + settings.commandTimeout
        let future: EventLoopFuture<RESPValue>
        if let sha = script.sha.withLock({ $0 }) {
            future = client.send(["EVALSHA", .string(sha)] + operands, deadline: deadline, orderedBy: key)
                .flatMapError { error in
                    guard case RedisError.server(let message) = error, message.hasPrefix("NOSCRIPT") else {
                        return self.eventLoopGroup.next().makeFailedFuture(error)
                    }
                    return self.client.send(
                        ["EVAL", .string(script.body)] + operands, deadline: .now() + self.settings.commandTimeout,
                        orderedBy: key)
                }
        } else {
            future = client.send(["EVAL", .string(script.body)] + operands, deadline: deadline, orderedBy: key)
            // The server has the script now (EVAL caches it): learn its SHA-1 for the next calls.
            future.whenSuccess { _ in
                _ = self.client.send(["SCRIPT", "LOAD", .string(script.body)], deadline: .now() + .seconds(5))
                    .map { reply in if let sha = reply.string { script.sha.withLock { $0 = sha } } }
            }
        }
        future.whenComplete { result in self.noteOutcome(result.map { _ in () }) }
        return future.flatMapErrorThrowing { error in
            if case RedisError.server(let message) = error, message.contains("HANGAR_") { throw error }
            throw self.pubsubError(error)
        }
    }

    /// The usage a Hangar error reply of the publish script names (`HANGAR_FULL 1200`), if it is one of `code`'s.
    static func refusedUsage(_ error: any Error, code: String) -> Int? {
        guard case RedisError.server(let message) = error, let range = message.range(of: code + " ") else {
            return nil
        }
        return Int(message[range.upperBound...].prefix { $0.isNumber })
    }

    /// Takes `account`'s figures from a script's reply (at `offset`) into the cache.
    func noteUsage(_ topic: String, _ reply: [RESPValue], at offset: Int) {
        guard reply.count >= offset + 3, case .integer(let bytes) = reply[offset],
            case .integer(let partitionBytes) = reply[offset + 1], case .integer(let version) = reply[offset + 2],
            bytes >= 0
        else { return }
        state.withLock {
            $0.usage.update(topic: topic, bytes: Int(bytes), partitionBytes: Int(partitionBytes), version: version)
        }
    }

    /// Reads every partition's counters into the cache (and zeroes those of streams that are gone).
    func refreshUsage() -> EventLoopFuture<Void> {
        let asked = state.withLock { $0.usage.stamp }
        return evaluate(
            Self.usageScript,
            keys: [
                .string(RedisPubSubKeys.versions), .string(RedisPubSubKeys.partitions), .string(RedisPubSubKeys.total),
            ],
            arguments: [.string(RedisPubSubKeys.topicsPrefix)]
        ).map { reply in
            var snapshot: [String: RedisPubSubUsage.Partition] = [:]
            for item in reply.elements ?? [] {
                guard let fields = item.elements, fields.count == 4, let name = fields[0].string,
                    let version = Self.integer(fields[1]), let bytes = Self.integer(fields[2])
                else { continue }
                var partition = RedisPubSubUsage.Partition(bytes: Int(bytes), version: version)
                let topics = fields[3].elements ?? []
                var index = 0
                while index + 1 < topics.count {
                    if let topic = topics[index].string, let count = Self.integer(topics[index + 1]) {
                        partition.topics[topic] = (Int(count), version)
                    }
                    index += 2
                }
                snapshot[name] = partition
            }
            self.state.withLock { $0.usage.read(snapshot, asked: asked) }
        }
    }

    /// An integer reply, or a bulk string holding one.
    static func integer(_ value: RESPValue) -> Int64? {
        if case .integer(let number) = value { return number }
        return value.string.flatMap { Int64($0) }
    }

    // MARK: Room

    /// Whether a publish to `partition` (nil: refused for `maxRetainedBytes`) refused for room should trim first
    /// (`PubSubTrimGate`); a yes counts as the trim, so that concurrent refusals do not all trim.
    func mayTrimForRoom(_ partition: String?) -> Bool {
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
        return state.withLock { state in
            var gate = state.gates[partition] ?? PubSubTrimGate(interval: settings.fullTrimInterval)
            gate.begin()
            let due = gate.shouldTrim(now: now)
            if due { gate.trimmed(now: now) }
            state.gates[partition] = gate
            return due
        }
    }

    /// An ack or a removed group may have made room in `partition` (and in the component).
    func settled(_ partition: String) {
        state.withLock { state in
            for key in [partition, nil] as [String?] {
                var gate = state.gates[key] ?? PubSubTrimGate(interval: settings.fullTrimInterval)
                gate.settled()
                state.gates[key] = gate
            }
        }
    }

    /// How many trims refused publishes ran (`PubSubTrimGate`; for tests).
    package var trimsForRoom: Int { state.withLock { $0.gates.values.reduce(0) { $0 + $1.trimsForRoom } } }

    /// The topics a trim for room in `partition` (nil: all) looks at: those this node knows and those the counters
    /// say hold bytes (published by other nodes).
    func topicsForRoom(_ partition: String?) -> [String] {
        state.withLock { state in
            let known = state.topics.filter { topic in partition.map { PubSubPartition.of(topic) == $0 } ?? true }
            return Array(known.union(state.usage.topics(in: partition))).sorted()
        }
    }
}
