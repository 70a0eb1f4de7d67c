import HangarComponents
import Logging
import NIOCore
import NIOPosix
import Synchronization
import HangarSync

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads of `state.sqlite` served on the caller's event loop when that cannot stall it, instead of a hop to the
/// thread pool and back.
///
/// **Why.** A point read costs SQLite a few microseconds, but the hop costs more than the read: the request is handed
/// to a pool thread, which is woken, and the answer handed back to the event loop, which is woken again (3.3 context
/// switches per call against 1). Measured with one caller, a GetState on `state.sqlite` cost hangard 1.8–3× the CPU
/// of one on `state.in-memory`, nearly all of it the hop; read here, 1.2–1.35× (BENCHMARKS.md, *Issue 15:
/// `state.sqlite` reads on the event loop*).
///
/// **What is read inline.** A `get`, and a `bulkGet` of at most `bulkLimit` keys, asked for on one of the event loops
/// of the group the store was opened with, by a thread running that loop. Everything else goes to the pool: writes
/// (always: a commit may wait for the disk, and writes wait for each other), bigger bulk reads, reads asked for off
/// the loop, and any read while inline reads are off (below).
///
/// **From which connection.** A file database in WAL mode gives each event loop a read-only connection of its own,
/// opened on the thread pool the first time a read from that loop goes there, then used only by that loop. A WAL
/// reader takes no lock a writer holds: it reads the last committed snapshot while a write transaction is open, so
/// it never waits for the writer. Its busy timeout is zero: if SQLite ever answers `SQLITE_BUSY` (a WAL recovery,
/// another process holding the file in exclusive mode), the read is not retried on the loop but done again on the
/// pool, whose readers wait. A database that refused WAL (rollback journal) is never read inline: there, readers
/// wait for writers. An in-memory database (one connection, the writer) is read inline when no write holds the
/// writer at that moment, else on the pool; it never touches a disk.
///
/// **A slow disk.** A read from the loop's connection finds its pages in the connection's own cache or reads them
/// from the files (`pread`): from the kernel's page cache, a microsecond; from the disk, as long as the disk takes.
/// The store guards against the second case twice:
/// - Before: inline reads are on only while every page of the database file and its WAL is in the page cache
///   (`mincore(2)` on a mapping of each file that is never touched). This is checked on the thread pool: when the
///   store opens, and each time inline reads are to be turned back on. When the files are not resident and together
///   hold at most `prefetchLimit` bytes, the check asks the kernel to read them in (`POSIX_FADV_WILLNEED`, in the
///   background) and the next check, `retryInterval` later, usually finds them there. Pages written since are in the
///   cache anyway (a write goes through it).
/// - After: every inline read is timed (a monotonic clock, tens of nanoseconds), and what its thread read from the
///   disk is taken before it (`getrusage(RUSAGE_THREAD)`, about 0.3 µs: blocks read, major faults). A read that took
///   longer than `budget` *and* read from the disk is slow. One that was only descheduled, or waited for a lock
///   (SQLite's WAL-index mutex, malloc's) whose holder the machine did not run, is not the disk's fault and changes
///   nothing: a busy machine does that to event loop threads for milliseconds, and turning reads off for it would
///   send them all to the pool, where they cost more. A slow read turns inline reads off for the whole store,
///   `retryInterval` the first time, doubling on each further slow read within `maxPenalty` of the previous one, up
///   to `maxPenalty`; then the residency check decides. So a slow disk can stall each event loop once per penalty at
///   most, for one read; a cached database is read inline all the time.
///
/// **Limits.**
/// - A page evicted between the check and the read is read from the disk on the loop: that read is the one the
///   budget catches. A miss the disk answers within the budget (a fast SSD) is let through. A read that waits for a
///   page another thread is already reading in, or on a file system whose reads the kernel does not count as block
///   input (network and FUSE file systems, where SQLite's WAL is not supported anyway), is not seen as slow: the
///   residency check is the only guard there.
/// - The files must be *entirely* resident: a database much bigger than the memory the kernel gives its page cache
///   is read on the pool, as before, even when its hot keys are cached (checking the pages one read will touch is not
///   possible from outside SQLite).
/// - Memory-mapped I/O (`PRAGMA mmap_size`) is left off: it would save a `pread` from the page cache on the first
///   read after each write (another connection's commit empties a WAL reader's page cache), about a microsecond, and
///   turns an I/O error into a `SIGBUS` that kills the daemon.
/// - SQLite's WAL read path retries internally, with sleeps of microseconds, in rare races with a checkpoint that
///   restarts the WAL; such a read holds its loop for that long and is not counted as slow (it read no disk).
/// - Each event loop that has read the store holds one more connection (its schema, statements and page cache, up
///   to SQLite's default 2 MB): `System.coreCount` at most per store.
final class SQLiteInlineReads: Sendable {
    /// How inline reads behave; the store's `Configuration` carries it.
    struct Settings: Sendable, Hashable {
        /// A read on the loop that takes longer turns inline reads off for a while.
        var budget: Duration
        /// How long inline reads stay off after the first slow read, and how often a store whose files are not all
        /// in the page cache checks again.
        var retryInterval: Duration
        /// The longest they stay off after slow reads in a row.
        var maxPenalty: Duration = .seconds(64)
        /// A bulk read of more keys goes to the pool.
        var bulkLimit = 16
        /// Files not resident but at most this big (the database and its WAL together) are read in by the kernel
        /// in the background, so that inline reads can start.
        var prefetchLimit = 64 << 20
    }

    /// One event loop's read-only connection: opened on the pool, used on the loop.
    final class LoopReader: Sendable {
        enum State {
            case unopened
            case open(SQLiteConnection)
            case closed
        }

        let state = Locked<State>(.unopened)
        /// Set once the connection is open or the reader closed: the pool's reads stop asking to open it.
        let settled = Atomic<Bool>(false)
    }

    /// Where inline reads read from.
    enum Source: Sendable {
        /// A file database in WAL mode: each event loop of the group has its reader.
        case loopReaders([ObjectIdentifier: LoopReader])
        /// An in-memory database: the writer, when it is free.
        case writer(SQLiteStateStore.ConnectionSlot)
    }

    let settings: Settings
    /// `settings.budget` in nanoseconds.
    private let budget: Int64
    private let source: Source
    /// The files whose pages must all be in the page cache (empty for an in-memory database).
    private let files: [String]
    private let openReader: @Sendable () throws -> SQLiteConnection
    private let threadPool: NIOThreadPool
    private let logger: Logger

    /// `on` (0): inline reads are on; `checking`: a residency check is under way; any other value: off until that
    /// uptime, in nanoseconds.
    private let gate: Atomic<UInt64>
    private static let on: UInt64 = 0
    private static let checking: UInt64 = .max
    /// The current penalty and when the last slow read was.
    private let slowReads = Locked<(penalty: Duration, last: NIODeadline?)>((.zero, nil))

    /// Sets inline reads up and runs the first residency check (blocking: meant for the store's initialisation).
    /// `openReader` opens one loop's read-only connection.
    init(
        settings: Settings, source: Source, files: [String], threadPool: NIOThreadPool, logger: Logger,
        openReader: @escaping @Sendable () throws -> SQLiteConnection
    ) {
        self.settings = settings
        self.budget = TimeAmount(settings.budget).nanoseconds
        self.source = source
        self.files = files
        self.threadPool = threadPool
        self.logger = logger
        self.openReader = openReader
        let resident = Self.resident(files, prefetchLimit: settings.prefetchLimit)
        gate = Atomic(resident ? Self.on : Self.deadline(after: settings.retryInterval))
        if !resident {
            logger.debug("SQLite files not all in the page cache: reads use the thread pool for now")
        }
    }

    /// The event loops of `group`, each with a reader not opened yet.
    static func loopReaders(of group: any EventLoopGroup) -> [ObjectIdentifier: LoopReader] {
        var readers: [ObjectIdentifier: LoopReader] = [:]
        for loop in group.makeIterator() { readers[ObjectIdentifier(loop)] = LoopReader() }
        return readers
    }

    /// Runs `body` on this loop's connection now and answers its result, or nil when the read must go to the pool:
    /// not called on a loop of the group, inline reads off, the connection busy or not open yet. A closed store
    /// answers `StateStoreError.closed`.
    func read<Value: Sendable>(
        on eventLoop: any EventLoop, _ body: (SQLiteConnection) throws -> Value
    ) -> Result<Value, any Error>? {
        let gate = gate.load(ordering: .relaxed)
        guard gate == Self.on else {
            if gate != Self.checking, NIODeadline.now().uptimeNanoseconds >= gate,
                self.gate.compareExchange(expected: gate, desired: Self.checking, ordering: .relaxed).exchanged
            {
                scheduleCheck()
            }
            return nil
        }
        guard eventLoop.inEventLoop else { return nil }
        do {
            switch source {
            case .loopReaders(let readers):
                guard let reader = readers[ObjectIdentifier(eventLoop)] else { return nil }
                let budget = budget
                let read = try reader.state.withLockIfAvailable { state -> (Value, slow: TimeAmount?)? in
                    let connection: SQLiteConnection
                    switch state {
                    case .unopened: return nil
                    case .closed: throw StateStoreError.closed
                    case .open(let open): connection = open
                    }
                    let before = DiskReads.now()
                    let started = NIODeadline.now()
                    let value = try body(connection)
                    let elapsed = NIODeadline.now() - started
                    // Slow only when the thread read from the disk. A loop thread the machine did not run for a while,
                    // or that waited for a lock whose holder it did not run, is not a slow disk.
                    guard elapsed.nanoseconds > budget, DiskReads.now() != before else { return (value, nil) }
                    return (value, elapsed)
                }
                guard let read = read.flatMap({ $0 }) else { return nil }
                if let slow = read.slow { slowRead(took: slow) }
                return .success(read.0)
            case .writer(let slot):
                // Memory only: nothing to time.
                let value = try slot.connection.withLockIfAvailable { connection -> Value in
                    guard let connection else { throw StateStoreError.closed }
                    return try body(connection)
                }
                return value.map { .success($0) }
            }
        } catch {
            return .failure(error)
        }
    }

    /// Opens this loop's reader if it has none yet. Blocking: called on the pool, after a read from that loop.
    func openReader(for eventLoop: any EventLoop) {
        guard case .loopReaders(let readers) = source, let reader = readers[ObjectIdentifier(eventLoop)],
            !reader.settled.load(ordering: .relaxed)
        else { return }
        reader.state.withLock { state in
            guard case .unopened = state else { return }
            do {
                state = .open(try openReader())
            } catch {
                // Left unopened: the loop's reads stay on the pool, and a later one tries again.
                logger.warning("cannot open an event loop's SQLite reader", metadata: ["error": "\(error)"])
                return
            }
        }
        reader.settled.store(true, ordering: .relaxed)
    }

    /// Closes every loop's reader (blocking: on the pool, before the writer closes). Later inline reads answer
    /// `StateStoreError.closed`.
    func close() {
        guard case .loopReaders(let readers) = source else { return }
        for reader in readers.values {
            reader.state.withLock { state in
                if case .open(let connection) = state { connection.close() }
                state = .closed
            }
            reader.settled.store(true, ordering: .relaxed)
        }
    }

    /// Whether inline reads are on now (for tests).
    var isOn: Bool { gate.load(ordering: .relaxed) == Self.on }

    // MARK: - Turning inline reads off and on

    private func slowRead(took elapsed: TimeAmount) {
        let now = NIODeadline.now()
        let penalty = slowReads.withLock { slow -> Duration in
            if let last = slow.last, now - last < TimeAmount(settings.maxPenalty), slow.penalty > .zero {
                slow.penalty = min(slow.penalty * 2, settings.maxPenalty)
            } else {
                slow.penalty = settings.retryInterval
            }
            slow.last = now
            return slow.penalty
        }
        gate.store(Self.deadline(after: penalty), ordering: .relaxed)
        logger.notice(
            "a SQLite read on an event loop was slow: reads use the thread pool for a while",
            metadata: [
                "sqlite.read_us": "\(elapsed.nanoseconds / 1000)",
                "sqlite.inline_off_ms": "\(penalty.saturatingMilliseconds)",
            ])
    }

    /// Checks on the pool whether the files are resident, then turns inline reads on, or off for `retryInterval`.
    private func scheduleCheck() {
        let files = files
        let settings = settings
        threadPool.submit { [self] state in
            guard case .active = state else {
                gate.store(Self.deadline(after: settings.retryInterval), ordering: .relaxed)
                return
            }
            let resident = Self.resident(files, prefetchLimit: settings.prefetchLimit)
            gate.store(resident ? Self.on : Self.deadline(after: settings.retryInterval), ordering: .relaxed)
        }
    }

    private static func deadline(after duration: Duration) -> UInt64 {
        // Never `on` nor `checking`, whatever the clock says.
        min(max((NIODeadline.now() + TimeAmount(duration)).uptimeNanoseconds, 1), checking - 1)
    }

    // MARK: - Page cache residency

    /// Whether every page of every file is in the page cache (a missing file counts as resident: SQLite has not
    /// created that WAL yet). When they are not and weigh at most `prefetchLimit` together, asks the kernel to read
    /// them in. Blocking (a few system calls per file, a byte per page): never on an event loop.
    static func resident(_ files: [String], prefetchLimit: Int) -> Bool {
        var missing: [(descriptor: Int32, size: Int)] = []
        var total = 0
        defer { for file in missing { _ = SystemCalls.close(file.descriptor) } }
        for path in files {
            let descriptor = SystemCalls.open(path, O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else {
                if errno == ENOENT { continue }
                return false
            }
            var info = stat()
            guard fstat(descriptor, &info) == 0 else {
                _ = SystemCalls.close(descriptor)
                return false
            }
            let size = Int(info.st_size)
            total += size
            if size > 0, !pagesResident(descriptor, size: size) {
                missing.append((descriptor, size))
            } else {
                _ = SystemCalls.close(descriptor)
            }
        }
        guard !missing.isEmpty else { return true }
        if total <= prefetchLimit {
            #if canImport(Glibc)
                for file in missing { _ = posix_fadvise(file.descriptor, 0, 0, POSIX_FADV_WILLNEED) }
            #endif
        }
        return false
    }

    /// `mincore(2)` over a read-only shared mapping of the file, whose pages are never touched (mapping a file reads
    /// nothing; `mincore` only looks at the page cache).
    private static func pagesResident(_ descriptor: Int32, size: Int) -> Bool {
        // MAP_FAILED, a cast in C, is not imported.
        guard let mapping = mmap(nil, size, PROT_READ, MAP_SHARED, descriptor, 0),
            mapping != UnsafeMutableRawPointer(bitPattern: -1)
        else {
            return false
        }
        defer { munmap(mapping, size) }
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let pages = (size + pageSize - 1) / pageSize
        #if canImport(Glibc)
            var vector = [UInt8](repeating: 0, count: pages)
        #else
            var vector = [CChar](repeating: 0, count: pages)
        #endif
        guard mincore(mapping, size, &vector) == 0 else { return false }
        return vector.allSatisfy { $0 & 1 == 1 }
    }
}

/// The C calls whose Swift names clash with methods of the types above.
private enum SystemCalls {
    static func open(_ path: String, _ flags: Int32) -> Int32 {
        #if canImport(Glibc)
            Glibc.open(path, flags)
        #else
            Darwin.open(path, flags)
        #endif
    }

    static func close(_ descriptor: Int32) -> Int32 {
        #if canImport(Glibc)
            Glibc.close(descriptor)
        #else
            Darwin.close(descriptor)
        #endif
    }
}

/// What the calling thread has read from the disk so far: blocks read and major page faults
/// (`getrusage(RUSAGE_THREAD)`, about 0.3 µs). Lock waits and preemption are left out: they are the machine's
/// business, not the disk's. Where that is not available, every value is equal: reads are never found slow.
struct DiskReads: Equatable, Sendable {
    var blocksRead = 0
    var majorFaults = 0

    static func now() -> DiskReads {
        #if os(Linux)
            var usage = rusage()
            // RUSAGE_THREAD (1), which Glibc declares only for _GNU_SOURCE.
            guard getrusage(__rusage_who_t(1), &usage) == 0 else { return DiskReads() }
            return DiskReads(blocksRead: usage.ru_inblock, majorFaults: usage.ru_majflt)
        #else
            return DiskReads()
        #endif
    }
}
