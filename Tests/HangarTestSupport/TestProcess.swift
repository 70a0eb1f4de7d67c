package import Foundation

/// Starts the programs tests run (`redis-server`, `postgres`, `psql`, `openssl`) with `posix_spawn`, giving them
/// none of the test process's descriptors but standard input, output and error.
///
/// SwiftNIO opens its sockets without close-on-exec, so a child started the usual way holds a copy of every
/// connection any test has open at that moment. A connection the test then closes is not closed for its server
/// (the child's copy keeps it open) for as long as the child lives: the shared PostgreSQL server lives until the
/// test process ends, and held a `pubsub.redis` blocking connection open after the component had closed it.
package enum TestProcess {
    /// Starts `command` (an absolute path, then its arguments) with standard input from `/dev/null` and standard
    /// output and error appended to `output` (`/dev/null` when nil); its process id, for `waitpid` and `kill`.
    package static func spawn(_ command: [String], output: String? = nil) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output ?? "/dev/null", O_WRONLY | O_APPEND | O_CREAT, 0o666)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        closeInheritedDescriptors(&actions)
        var pid: pid_t = 0
        var argv = command.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let status = posix_spawn(&pid, command[0], &actions, nil, &argv, environ)
        guard status == 0 else {
            throw TestFailure("cannot start \(command[0]): \(String(cString: strerror(status)))")
        }
        return pid
    }

    /// Runs `command` to its end (as `spawn`); its exit status as `waitpid` gives it.
    package static func run(_ command: [String], output: String? = nil) throws -> Int32 {
        let pid = try spawn(command, output: output)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1, errno == EINTR {}
        return status
    }

    /// Adds "close every descriptor from 3 up" to `actions`: glibc's `posix_spawn_file_actions_addclosefrom_np`
    /// (2.34+, which Swift's Glibc module does not import) when there is one, else a close for each descriptor open
    /// now (a socket opened by another thread after this look is still inherited).
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
}
