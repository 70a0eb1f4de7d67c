import Foundation
import NIOCore
import NIOPosix
import Testing

import HangarTestSupport

@testable import HangarRedis

/// One connection to a real redis-server: set-up (HELLO 3, the RESP2 fallback, AUTH, ACL users, SELECT), pipelined
/// commands answered in order, error replies, deadlines and a server that goes away.
@Suite("Redis connection", .serialized)
struct RedisConnectionTests {
    let group = MultiThreadedEventLoopGroup.singleton

    func connect(_ server: RedisServer, _ change: (inout RedisConfiguration) -> Void = { _ in }) async throws
        -> RedisConnection
    {
        var configuration = RedisConfiguration(testing: server)
        change(&configuration)
        return try await RedisConnection.connect(configuration, on: group.next()).get()
    }

    /// A bound for replies, not a timing assertion: generous, as the whole suite runs at once on two cores in CI.
    func soon() -> NIODeadline { .now() + .seconds(20) }

    @Test("HELLO 3 sets a connection up in RESP3, and binary values round-trip")
    func resp3() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let connection = try await connect(server)
        defer { _ = connection.close() }
        #expect(connection.protocolVersion == 3)
        let value = ByteBuffer(bytes: [0, 13, 10, 255, 36, 42])
        #expect(try await connection.send(["SET", "k", .bytes(value)], deadline: soon()).get().string == "OK")
        #expect(try await connection.send(["GET", "k"], deadline: soon()).get() == .bulkString(value))
        #expect(try await connection.send(["GET", "missing"], deadline: soon()).get() == .null)
        // RESP3 answers HGETALL with a map.
        _ = try await connection.send(["HSET", "h", "data", "x", "version", "1"], deadline: soon()).get()
        guard case .map(let pairs) = try await connection.send(["HGETALL", "h"], deadline: soon()).get() else {
            Issue.record("HGETALL did not answer a map in RESP3")
            return
        }
        #expect(Set(pairs.map { $0.key.string ?? "" }) == ["data", "version"])
        let name = try await connection.send(["CLIENT", "GETNAME"], deadline: soon()).get()
        #expect(name.string == "hangard")
    }

    @Test("a server without HELLO gets RESP2 with AUTH and CLIENT SETNAME")
    func resp2Fallback() async throws {
        let server = try RedisServer(["--rename-command", "HELLO", "", "--requirepass", "s3cret"])
        defer { server.stop() }
        let connection = try await connect(server) { $0.password = "s3cret" }
        defer { _ = connection.close() }
        #expect(connection.protocolVersion == 2)
        #expect(try await connection.send(["PING"], deadline: soon()).get().string == "PONG")
        #expect(try await connection.send(["CLIENT", "GETNAME"], deadline: soon()).get().string == "hangard")
        // RESP2 answers HGETALL with a flat array, which `elements` reads like RESP3's map.
        _ = try await connection.send(["HSET", "h", "data", "x"], deadline: soon()).get()
        let all = try await connection.send(["HGETALL", "h"], deadline: soon()).get()
        guard case .array = all else {
            Issue.record("not an array in RESP2: \(all)")
            return
        }
        #expect(all.elements?.map(\.string) == ["data", "x"])
    }

    @Test("a wrong password or unknown user is a handshake error that never shows the password")
    func authentication() async throws {
        let server = try RedisServer(["--requirepass", "right-password"])
        defer { server.stop() }
        let wrong = await #expect(throws: RedisError.self) {
            try await connect(server) { $0.password = "wrong-password" }
        }
        guard case .handshake(let message)? = wrong else {
            Issue.record("not a handshake error: \(String(describing: wrong))")
            return
        }
        #expect(!message.contains("wrong-password") && !"\(wrong!)".contains("wrong-password"))
        let missing = await #expect(throws: RedisError.self) { try await connect(server) }
        #expect(
            missing.map { "\($0)".contains("NOAUTH") || "\($0)".contains("auth") } == true,
            "\(String(describing: missing))")

        let admin = try await connect(server) { $0.password = "right-password" }
        defer { _ = admin.close() }
        _ = try await admin.send(
            ["ACL", "SETUSER", "tenant-a", "on", ">tenant-pass", "~a:*", "+@all"], deadline: soon()
        ).get()
        let user = try await connect(server) {
            $0.username = "tenant-a"
            $0.password = "tenant-pass"
        }
        defer { _ = user.close() }
        #expect(try await user.send(["SET", "a:1", "x"], deadline: soon()).get().string == "OK")
        let denied = await #expect(throws: RedisError.self) {
            try await user.send(["SET", "b:1", "x"], deadline: soon()).get()
        }
        #expect(denied.map { "\($0)".contains("NOPERM") } == true, "\(String(describing: denied))")
    }

    @Test("a database other than 0 is selected")
    func select() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let three = try await connect(server) { $0.database = 3 }
        let zero = try await connect(server)
        defer {
            _ = three.close()
            _ = zero.close()
        }
        _ = try await three.send(["SET", "where", "three"], deadline: soon()).get()
        #expect(try await zero.send(["GET", "where"], deadline: soon()).get() == .null)
        #expect(try await three.send(["GET", "where"], deadline: soon()).get().string == "three")
        let bad = await #expect(throws: RedisError.self) { try await connect(server) { $0.database = 99 } }
        guard case .handshake? = bad else {
            Issue.record("not a handshake error: \(String(describing: bad))")
            return
        }
    }

    @Test("pipelined commands from many tasks each get their own reply")
    func pipelining() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let connection = try await connect(server)
        defer { _ = connection.close() }
        let replies = try await withThrowingTaskGroup(of: (Int, RESPValue).self) { group in
            for index in 0..<2_000 {
                group.addTask {
                    // Not awaited before the GET: both are in flight together, and the GET must see the SET.
                    let set = connection.send(
                        ["SET", .string("key-\(index)"), .string("value-\(index)")], deadline: soon())
                    let value = try await connection.send(["GET", .string("key-\(index)")], deadline: soon()).get()
                    #expect(try await set.get().string == "OK")
                    return (index, value)
                }
            }
            var all: [Int: RESPValue] = [:]
            for try await (index, value) in group { all[index] = value }
            return all
        }
        #expect(replies.count == 2_000)
        #expect(replies.allSatisfy { $0.value.string == "value-\($0.key)" })
    }

    @Test("an error reply fails its command only; the connection goes on")
    func errorReply() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let connection = try await connect(server)
        defer { _ = connection.close() }
        _ = try await connection.send(["SET", "s", "text"], deadline: soon()).get()
        let error = await #expect(throws: RedisError.self) {
            try await connection.send(["INCR", "s"], deadline: soon()).get()
        }
        #expect(error.map { "\($0)".contains("not an integer") } == true, "\(String(describing: error))")
        #expect(try await connection.send(["PING"], deadline: soon()).get().string == "PONG")
    }

    @Test("a command past its deadline closes the connection, and every later command fails at once")
    func deadline() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let connection = try await connect(server)
        let blocked = connection.send(["BLPOP", "never", "30"], deadline: .now() + .milliseconds(100))
        let behind = connection.send(["PING"], deadline: soon())
        await #expect(throws: RedisError.deadlineExceeded) { try await blocked.get() }
        await #expect(throws: RedisError.deadlineExceeded) { try await behind.get() }
        let after = await #expect(throws: RedisError.self) {
            try await connection.send(["PING"], deadline: soon()).get()
        }
        #expect(after != nil)
        #expect(!connection.isActive)
    }

    @Test("commands waiting when the server goes away fail instead of hanging")
    func serverGone() async throws {
        let server = try RedisServer()
        let connection = try await connect(server)
        let waiting = connection.send(["BLPOP", "never", "30"], deadline: soon())
        // Another connection kills every client but itself: the server closes the waiting one.
        let killer = try await connect(server)
        _ = try await killer.send(["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"], deadline: soon()).get()
        _ = killer.close()
        let error = await #expect(throws: RedisError.self) { try await waiting.get() }
        guard case .connectionClosed? = error else {
            Issue.record("not connectionClosed: \(String(describing: error))")
            server.stop()
            return
        }
        server.stop()
        let refused = await #expect(throws: RedisError.self) { try await connect(server) }
        guard case .connectionClosed(let why)? = refused else {
            Issue.record("not connectionClosed: \(String(describing: refused))")
            return
        }
        #expect(why.contains("cannot connect"))
    }

    @Test("a Unix socket address works")
    func unixSocket() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let connection = try await RedisConnection.connect(
            RedisConfiguration(address: .unix(path: server.socketPath)), on: group.next()
        ).get()
        defer { _ = connection.close() }
        #expect(try await connection.send(["PING"], deadline: soon()).get().string == "PONG")
    }
}
