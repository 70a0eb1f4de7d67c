import Foundation
import Logging
import NIOPosix
import Synchronization
import HangarSync

/// Checkpoints the WAL of a `pubsub.sqlite` database beside its writer, so that no commit copies pages into the
/// database file and waits for its fsync. SQLite's auto-checkpoint does that inside the commit that takes the WAL
/// past 1000 frames: under a steady publish load it held the writer, and every publish waiting on it, 7 ms at the
/// median and up to 480 ms. Beside it, under the same load, the passes took 3 ms at the median and up to 280 ms
/// without holding the writer, and the writer's own catch-up (below) 1 ms at the median, 5 ms at p99.
///
/// The writer's connection has no auto-checkpoint; its WAL hook records how many frames the WAL holds after each
/// commit (`WALFrames`). Past `threshold` frames, the writer's drain hands a PASSIVE checkpoint to a second
/// connection on the thread pool, which copies what the WAL holds while the writer goes on appending.
///
/// A WAL starts again from its beginning only at a commit that finds every frame copied, which a checkpoint running
/// beside a steady writer never quite achieves: left alone, the WAL would grow for as long as the load lasts. So
/// once a background pass has left at most `catchUp` frames behind, the writer copies the rest itself between two
/// batches (a short copy and two small fsyncs), and its next commit starts a fresh WAL. Past `limit` frames it does
/// so whatever is left, so the WAL stays bounded even when the background passes cannot keep up.
final class SQLitePubSubCheckpointer: Sendable {
    /// Frames after which a checkpoint starts (SQLite's own auto-checkpoint default).
    static let threshold = 1000
    /// The writer finishes a checkpoint itself when at most this many frames are left to copy...
    static let catchUp = 256
    /// ...or, whatever is left, when the WAL holds this many frames (about 32 MiB of 4 KiB pages).
    static let limit = 8000
    /// The bytes a WAL file is cut back to when it starts again (`journal_size_limit`).
    static let fileLimit = 16 << 20

    /// What the checkpoints know of the WAL.
    private struct State {
        /// A background pass is running (the writer must not checkpoint beside it).
        var running = false
        /// Frames the last background pass copied, of the WAL as it then was.
        var copied = 0
        /// The WAL's frames when the writer last looked: fewer now means the WAL started again.
        var lastFrames = 0
    }

    /// The frame count the writer's WAL hook records.
    let frames = WALFrames()
    private let connection: Locked<SQLiteConnection?>
    private let state = Locked(State())
    private let threadPool: NIOThreadPool
    private let logger: Logger

    /// Opens the checkpointing connection to the writer's database at `path`.
    init(path: String, busyTimeout: Duration, synchronousFull: Bool, threadPool: NIOThreadPool, logger: Logger) throws {
        let connection = try SQLiteConnection(path: path, busyTimeout: busyTimeout)
        try connection.execute("PRAGMA synchronous = \(synchronousFull ? "FULL" : "NORMAL")")
        self.connection = Locked(connection)
        self.threadPool = threadPool
        self.logger = logger
    }

    /// Called by the writer's drain after each batch, on its thread, with its connection: starts a background pass,
    /// or finishes one on `writer` (see the type's description).
    func afterBatch(writer: SQLiteConnection) {
        let frames = frames.count
        let action = state.withLock { state -> Action in
            if frames < state.lastFrames { state.copied = 0 }  // the WAL started again
            state.lastFrames = frames
            guard frames >= Self.threshold, !state.running else { return .none }
            if frames - state.copied <= Self.catchUp || frames >= Self.limit {
                state.copied = 0
                return .finish
            }
            state.running = true
            return .background
        }
        switch action {
        case .none:
            break
        case .finish:
            do {
                _ = try writer.checkpoint()
            } catch {
                logger.warning("checkpointing the pub/sub WAL failed", metadata: ["error": "\(error)"])
            }
        case .background:
            threadPool.submit { [self] _ in pass() }
        }
    }

    private enum Action { case none, finish, background }

    /// One background PASSIVE checkpoint.
    private func pass() {
        let copied = connection.withLock { connection -> Int in
            guard let connection else { return 0 }
            do {
                return try connection.checkpoint().copied
            } catch {
                logger.warning("checkpointing the pub/sub WAL failed", metadata: ["error": "\(error)"])
                return 0
            }
        }
        state.withLock { state in
            state.running = false
            state.copied = copied
        }
    }

    /// Closes the checkpointing connection, after the pass under way if any.
    func close() {
        connection.withLock { connection in
            connection?.close()
            connection = nil
        }
    }
}

/// The frames a connection's WAL holds after its last commit, as its WAL hook reports them (`SQLiteConnection`).
final class WALFrames: Sendable {
    private let value = Atomic<Int>(0)

    var count: Int { value.load(ordering: .relaxed) }

    func record(_ frames: Int) { value.store(frames, ordering: .relaxed) }
}
