import Foundation
import Synchronization
import HangarSync

#if canImport(Glibc)
    import Glibc
#endif

/// Tells the node when its configuration files may have changed: inotify on the watched directories (so a change
/// is seen within milliseconds), plus a periodic fingerprint of those directories and files as a safety net for
/// what inotify misses (network filesystems, a watched directory replaced, files outside the directories such
/// as `apiTokenFile`s). Kubernetes ConfigMap volumes, which swap a `..data` symlink, are seen by both.
///
/// Notifications are coalesced: a burst of events (an editor's write-rename-chmod) gives one notification once
/// the directory has been quiet for `settle`.
final class ConfigWatcher: Sendable {
    private struct Watched: Sendable {
        var directories: [String]
        var files: [String]
    }

    private let watched: Locked<Watched>
    private let stopped = Atomic<Bool>(false)
    private let pollInterval: Duration
    private let settle: Duration

    init(directories: [String], files: [String] = [], pollInterval: Duration = .seconds(2),
        settle: Duration = .milliseconds(10))
    {
        self.watched = Locked(Watched(directories: directories, files: files))
        self.pollInterval = pollInterval
        self.settle = settle
    }

    /// Also watch these files (and their directories) from now on, e.g. the token files of a new configuration.
    func setFiles(_ files: [String]) {
        watched.withLock { $0.files = files }
    }

    func stop() { stopped.store(true, ordering: .releasing) }

    /// A notification per settled change after this call, until `stop()`. The files are fingerprinted before it
    /// returns, so a caller that reads the configuration after calling it misses no change.
    func changes() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let initial = currentFingerprint()
        let thread = Thread { [self] in
            self.loop(from: initial) { continuation.yield() }
            continuation.finish()
        }
        thread.name = "hangard-config-watcher"
        thread.start()
        return stream
    }

    private func loop(from initial: [String: [Int]], _ notify: () -> Void) {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        defer { if fd >= 0 { close(fd) } }
        var watchedPaths: Set<String> = []
        var fingerprint = initial
        let pollMillis = Int32(pollInterval.components.seconds * 1000 + pollInterval.components.attoseconds / 1_000_000_000_000_000)
        let settleMicros = useconds_t(settle.components.attoseconds / 1_000_000_000_000 + settle.components.seconds * 1_000_000)
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while !stopped.load(ordering: .acquiring) {
            if fd >= 0 { addWatches(fd, &watchedPaths) }
            var changed = false
            if fd >= 0 {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                // Wake at least every 250 ms to notice stop(); fingerprint on the poll interval.
                let ready = poll(&pfd, 1, min(250, pollMillis))
                if ready > 0 {
                    // Drain what woke us, then wait for the burst to settle: until a quiet `settle` passes.
                    while read(fd, &buffer, buffer.count) > 0 {}
                    repeat {
                        usleep(settleMicros)
                    } while drain(fd, &buffer)
                    changed = true
                }
            } else {
                usleep(250_000)
            }
            let now = currentFingerprint()
            if now != fingerprint {
                fingerprint = now
                changed = true
            }
            if changed && !stopped.load(ordering: .acquiring) { notify() }
        }
    }

    /// Reads every queued event; true if there was any.
    private func drain(_ fd: Int32, _ buffer: inout [UInt8]) -> Bool {
        var any = false
        while read(fd, &buffer, buffer.count) > 0 { any = true }
        return any
    }

    private func addWatches(_ fd: Int32, _ watchedPaths: inout Set<String>) {
        let paths = watched.withLock { watched in
            Set(watched.directories + watched.files.map { ($0 as NSString).deletingLastPathComponent })
        }
        let mask = UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_ATTRIB)
            | UInt32(IN_DELETE_SELF | IN_MOVE_SELF)
        for path in paths.subtracting(watchedPaths) where !path.isEmpty {
            if inotify_add_watch(fd, path, mask) >= 0 { watchedPaths.insert(path) }
        }
    }

    /// Names, sizes, inodes and modification times of every file in the watched directories and of the watched
    /// files (following symlinks).
    private func currentFingerprint() -> [String: [Int]] {
        let (directories, files) = watched.withLock { ($0.directories, $0.files) }
        var result: [String: [Int]] = [:]
        func add(_ path: String) {
            var info = stat()
            if stat(path, &info) == 0 {
                result[path] = [
                    Int(info.st_size), Int(info.st_ino), Int(info.st_mtim.tv_sec), Int(info.st_mtim.tv_nsec),
                    Int(info.st_mode),
                ]
            } else {
                result[path] = [-1]
            }
        }
        for directory in directories {
            add(directory)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                add(directory + "/" + name)
            }
        }
        for file in files { add(file) }
        return result
    }
}
