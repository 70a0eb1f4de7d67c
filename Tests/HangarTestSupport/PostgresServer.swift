package import Foundation

/// A real PostgreSQL server (Debian's `postgresql`, which scripts/test.sh installs) in a temporary data directory,
/// listening on a free loopback port and on a Unix socket in that directory. PostgreSQL refuses to run as root, so
/// when the tests run as root every program runs as the `postgres` user (`setpriv`, which execs in place, so `pid`
/// is the postmaster's) and the directory is handed to that user.
///
/// The superuser `postgres` has the password `superPassword` over TCP (scram-sha-256); the Unix socket trusts
/// local users, which `psql` uses for setup. `crash()` is an immediate shutdown (the server recovers from its WAL at
/// `restart()`, on the same port); `fsync` is off (only an OS crash would lose what the OS has) but commits are
/// synchronous, so an acknowledged write survives `crash()`. `stop()` ends it and removes its directory.
/// `@unchecked Sendable`: a test drives it from one task at a time (start, crash, restart, stop).
package final class PostgresServer: @unchecked Sendable {
    package private(set) var port: Int
    package let directory: URL
    package let binDirectory: String
    package private(set) var pid: pid_t = 0
    package static let superPassword = "hangar-super-secret"
    package var dataDirectory: String { directory.appendingPathComponent("data").path }
    package var socketDirectory: String { directory.appendingPathComponent("socket").path }

    /// A connection string (key=value form) for `user` on the TCP port.
    package func connectionString(
        user: String = "postgres", password: String = PostgresServer.superPassword, database: String = "postgres"
    ) -> String {
        "host=127.0.0.1 port=\(port) user=\(user) password='\(password)' dbname=\(database) sslmode=disable"
    }

    /// One server for the whole test process, started on first use and ended when the process exits (or why it
    /// could not be started: each test that needs it then fails with that).
    private static let shared: Result<PostgresServer, any Error> = {
        do {
            let server = try PostgresServer()
            sharedPID = server.pid
            sharedDirectory = server.directory.path
            atexit {
                if sharedPID > 0, kill(sharedPID, SIGQUIT) == 0 { waitpid(sharedPID, nil, 0) }
                if let directory = sharedDirectory { try? FileManager.default.removeItem(atPath: directory) }
            }
            return .success(server)
        } catch {
            return .failure(error)
        }
    }()

    /// Starts one on a thread of its own: initdb and the start-up wait block for a second or two, which must not
    /// hold one of the few threads that run the tests' tasks.
    package static func make() async throws -> PostgresServer {
        try await offThread { try PostgresServer() }
    }

    /// The shared server, started off the tasks' threads on first use.
    package static func sharedServer() async throws -> PostgresServer {
        try await offThread { try shared.get() }
    }

    /// Runs a blocking `body` on a new thread and waits for it without blocking the caller's thread.
    package static func offThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }

    /// `psql`, off the tasks' threads.
    @discardableResult
    package func sql(_ text: String) async throws -> String {
        try await Self.offThread { try self.psql(text) }
    }

    package init() throws {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        guard
            let version = versions.compactMap(Int.init).max(),
            FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/\(version)/bin/postgres")
        else {
            throw TestFailure("PostgreSQL is not installed (apt-get install postgresql; scripts/test.sh does it)")
        }
        binDirectory = "/usr/lib/postgresql/\(version)/bin"
        port = try RedisServer.freePort()
        directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("hangar-pg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(
            atPath: directory.appendingPathComponent("socket").path, withIntermediateDirectories: true)
        let passwordFile = directory.appendingPathComponent("pwfile").path
        try Self.superPassword.write(toFile: passwordFile, atomically: true, encoding: .utf8)
        try handOver(directory.path)
        try run(
            "\(binDirectory)/initdb", "-D", dataDirectory, "-U", "postgres", "--pwfile", passwordFile,
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        for attempt in 1...5 {
            do {
                try restart()
                return
            } catch let failure as TestFailure where failure.description.contains("already in use") {
                if attempt == 5 {
                    stop()
                    throw failure
                }
                port = try RedisServer.freePort()
            } catch {
                stop()
                throw error
            }
        }
    }

    /// Starts the server (again), on the same port, and waits until it accepts connections.
    package func restart() throws {
        let log = directory.appendingPathComponent("postgres.log").path
        let command = [
            "\(binDirectory)/postgres", "-D", dataDirectory, "-p", "\(port)", "-k", socketDirectory,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB",
        ]
        pid = try spawn(command, output: log)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if (try? psql("SELECT 1")) == "1" { return }
            guard waitpid(pid, nil, WNOHANG) == 0 else { break }
            usleep(50_000)
        }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        crash()
        throw TestFailure("postgres did not start: \(text)")
    }

    /// An immediate shutdown (SIGQUIT: every backend ends at once, nothing is checkpointed, like a crash), reaped;
    /// the data directory stays for `restart()`.
    package func crash() {
        if pid > 0, kill(pid, SIGQUIT) == 0 { waitpid(pid, nil, 0) }
        pid = 0
    }

    /// Sends `signal` to the postmaster and every backend it started (SIGSTOP: a server that hangs without closing
    /// its connections; SIGCONT: it resumes).
    package func signalAll(_ signal: Int32) {
        guard pid > 0 else { return }
        var targets = [pid]
        let processes = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in processes {
            guard let child = pid_t(entry),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 2, pid_t(fields[1]) == pid { targets.append(child) }
        }
        for target in targets { kill(target, signal) }
    }

    /// Ends the server and removes its directory.
    package func stop() {
        crash()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs SQL as the superuser over the Unix socket with `psql -At`; its output, trimmed.
    @discardableResult
    package func psql(_ sql: String, database: String = "postgres") throws -> String {
        let output = directory.appendingPathComponent("psql-\(UUID().uuidString).out").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        try run(
            "\(binDirectory)/psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", socketDirectory, "-p", "\(port)",
            "-U", "postgres", "-d", database, "-c", sql, output: output)
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Creates a login role with a password (scram-sha-256 over TCP). One at a time in this process: two GRANTs on
    /// the same schema at once fail in PostgreSQL with "tuple concurrently updated", and the suites run in parallel.
    package func createUser(_ name: String, password: String) throws {
        try Self.roleChanges.withLock {
            try psql("CREATE ROLE \(name) LOGIN PASSWORD '\(password)'; GRANT ALL ON SCHEMA public TO \(name)")
        }
    }

    private static let roleChanges = NSLock()

    // MARK: Processes

    private static var isRoot: Bool { getuid() == 0 }

    /// The command as the `postgres` user when running as root.
    private func asPostgres(_ command: [String]) -> [String] {
        guard Self.isRoot else { return command }
        return ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + command
    }

    private func handOver(_ path: String) throws {
        guard Self.isRoot else { return }
        try run("/bin/chown", "-R", "postgres:postgres", path, asRoot: true)
    }

    /// Runs a command to its end (as `postgres` unless `asRoot`); fails with its output when it exits non-zero.
    private func run(_ command: String..., output: String? = nil, asRoot: Bool = false) throws {
        let log = output ?? directory.appendingPathComponent("command-\(UUID().uuidString).log").path
        let pid = try spawn(asRoot ? command : asPostgres(command), output: log, wrap: false)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        guard status == 0 else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if output == nil { try? FileManager.default.removeItem(atPath: log) }
            throw TestFailure("\(command.first ?? "") failed (status \(status)): \(text)")
        }
        if output == nil { try? FileManager.default.removeItem(atPath: log) }
    }

    /// posix_spawn with stdout and stderr appended to `output` (a file the postgres user can write).
    private func spawn(_ command: [String], output: String, wrap: Bool = true) throws -> pid_t {
        let command = wrap ? asPostgres(command) : command
        if !FileManager.default.fileExists(atPath: output) {
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            if Self.isRoot { chmod(output, 0o666) }
        }
        // With none of the test process's other descriptors (`TestProcess`): the server lives until the test process
        // ends, and would otherwise keep every connection the tests have open now from closing for its peer.
        return try TestProcess.spawn(command, output: output)
    }
}

nonisolated(unsafe) private var sharedPID: pid_t = 0
nonisolated(unsafe) private var sharedDirectory: String?
