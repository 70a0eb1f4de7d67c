package import Foundation
import NIOCore
import NIOPosix

/// A real `redis-server` (Debian's `redis-server`, which scripts/test.sh installs) on a free loopback port and a
/// Unix socket in a temporary directory, with persistence off. `crash()` kills it and `restart()` starts it again
/// on the same port (an outage); `stop()` kills it and removes its directory.
/// `@unchecked Sendable`: a test drives it from one task at a time (start, crash, restart, stop).
package final class RedisServer: @unchecked Sendable {
    package private(set) var port: Int
    package let directory: URL
    package let arguments: [String]
    package private(set) var pid: pid_t = 0
    package var socketPath: String { directory.appendingPathComponent("redis.sock").path }

    /// Starts one with `arguments` added to its command line (`--requirepass`, `--rename-command`, ...); an argument
    /// `PORT` is replaced by its port (`--tls-port PORT --port 0` for a server that speaks only TLS).
    package init(_ arguments: [String] = []) throws {
        port = try Self.freePort()
        self.arguments = arguments
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("hangar-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // The free port can be taken before the server binds it (another test's outgoing connection gets it as its
        // local port): then try another.
        for attempt in 1...5 {
            do {
                try restart()
                return
            } catch let failure as TestFailure where failure.description.contains("Address already in use") {
                if attempt == 5 {
                    stop()
                    throw failure
                }
                port = try Self.freePort()
            } catch {
                stop()
                throw error
            }
        }
    }

    /// Starts the server (again), on the same port, and waits until it accepts connections.
    package func restart() throws {
        guard
            let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else {
            throw TestFailure("redis-server is not installed (apt-get install redis-server; scripts/test.sh does it)")
        }
        let command =
            [
                binary, "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", directory.path, "--unixsocket", socketPath, "--unixsocketperm", "700", "--daemonize", "no",
                "--logfile", directory.appendingPathComponent("redis.log").path,
            ] + arguments.map { $0 == "PORT" ? "\(port)" : $0 }
        // posix_spawn and waitpid, not Foundation's Process: its waitUntilExit spins a run loop that a test's thread
        // does not run, and it reaps children on a thread of its own.
        var pid: pid_t = 0
        var argv = command.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        // Its output goes to its log file, not to the test's: a server that outlived the test process (a crash)
        // must not hold the pipe `swift test` reads until it closes.
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // Nor any other descriptor of the test process: a client socket another test has open would stay open in
        // the server (its peer never sees it close), and so would a listening one.
        Self.closeInheritedDescriptors(&actions)
        let status = posix_spawn(&pid, binary, &actions, nil, &argv, environ)
        guard status == 0 else { throw TestFailure("cannot start redis-server: \(String(cString: strerror(status)))") }
        self.pid = pid
        // Ready once its socket file exists and a connection is accepted.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if FileManager.default.fileExists(atPath: socketPath), Self.accepts(port: port) { return }
            guard waitpid(pid, nil, WNOHANG) == 0 else { break }
            usleep(20_000)
        }
        let log = (try? String(contentsOf: directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
        crash()
        throw TestFailure("redis-server did not start: \(log)")
    }

    /// Kills the server (SIGKILL: nothing is persisted, and a process spawned from a test's thread may have SIGTERM
    /// blocked) and reaps it; its directory stays for `restart()`.
    package func crash() {
        if pid > 0, kill(pid, SIGKILL) == 0 { waitpid(pid, nil, 0) }
        pid = 0
        try? FileManager.default.removeItem(atPath: socketPath)
    }

    /// Kills the server and removes its directory.
    package func stop() {
        crash()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Adds "close every descriptor from 3 up" to `actions`: glibc's `posix_spawn_file_actions_addclosefrom_np`
    /// (2.34+, which Swift's Glibc module does not import) when there is one, else a close for each descriptor open
    /// now.
    private static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
            return
        }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for descriptor in open.compactMap({ Int32($0) }) where descriptor > 2 {
            posix_spawn_file_actions_addclose(&actions, descriptor)
        }
    }

    package static func freePort() throws -> Int {
        let group = MultiThreadedEventLoopGroup.singleton
        let channel = try ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).wait()
        defer { try? channel.close().wait() }
        return channel.localAddress!.port!
    }

    package static func accepts(port: Int) -> Bool {
        guard
            let channel = try? ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.milliseconds(200)).connect(host: "127.0.0.1", port: port).wait()
        else { return false }
        try? channel.close().wait()
        return true
    }
}

/// A test server that could not be started or reached.
package struct TestFailure: Error, CustomStringConvertible {
    package var description: String
    package init(_ description: String) { self.description = description }
}
