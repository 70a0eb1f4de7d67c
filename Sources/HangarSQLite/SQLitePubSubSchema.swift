/// The tables of a `pubsub.sqlite` database and the statements its writer runs (each prepared once per connection).
///
/// ```
/// pubsub_topics    (id, name UNIQUE, last_seq)                      one row per topic; last_seq is written when
///                                                                   messages are removed, so that a sequence is
///                                                                   never handed out twice (the last sequence is
///                                                                   the larger of it and the log's MAX(seq))
/// pubsub_messages  (topic_id, seq, published_at, expires_at, bytes,  the append-only log of every topic, keyed by
///                   content_type, metadata, data)                   (topic_id, seq); times in ms since 1970
/// pubsub_consumers (id, group_name, topic_id, cursor)               one row per (group, topic): the last sequence
///                                                                   handed to the group (UNIQUE(group, topic))
/// pubsub_pending   (consumer_id, seq, attempt, visible_at)          leased or nacked messages of a consumer, until
///                                                                   acked; visible again from visible_at
/// ```
///
/// `bytes` comes before the blobs so that accounting queries never read a message's overflow pages.
enum SQLitePubSubSchema {
    static let create = """
        CREATE TABLE IF NOT EXISTS pubsub_topics (
            id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, last_seq INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS pubsub_messages (
            topic_id INTEGER NOT NULL, seq INTEGER NOT NULL, published_at INTEGER NOT NULL, expires_at INTEGER,
            bytes INTEGER NOT NULL, content_type TEXT NOT NULL, metadata BLOB NOT NULL, data BLOB NOT NULL,
            PRIMARY KEY (topic_id, seq)
        );
        CREATE INDEX IF NOT EXISTS pubsub_messages_expires_at ON pubsub_messages (expires_at)
            WHERE expires_at IS NOT NULL;
        CREATE TABLE IF NOT EXISTS pubsub_consumers (
            id INTEGER PRIMARY KEY, group_name TEXT NOT NULL, topic_id INTEGER NOT NULL, cursor INTEGER NOT NULL,
            UNIQUE (group_name, topic_id)
        );
        CREATE TABLE IF NOT EXISTS pubsub_pending (
            consumer_id INTEGER NOT NULL, seq INTEGER NOT NULL, attempt INTEGER NOT NULL, visible_at INTEGER NOT NULL,
            PRIMARY KEY (consumer_id, seq)
        ) WITHOUT ROWID;
        """

    // Opening the database: leases are released, then the caches are loaded.
    static let releaseLeases = "UPDATE pubsub_pending SET visible_at = 0 WHERE visible_at > 0"
    /// Each topic's last sequence: `last_seq` as of the last removal, or the log's last message when later.
    static let loadTopics = """
        SELECT t.id, t.name,
            MAX(t.last_seq, COALESCE((SELECT MAX(m.seq) FROM pubsub_messages m WHERE m.topic_id = t.id), 0))
        FROM pubsub_topics t
        """
    static let loadUsage = "SELECT topic_id, SUM(bytes) FROM pubsub_messages GROUP BY topic_id"
    static let loadConsumers = "SELECT id, group_name, topic_id, cursor FROM pubsub_consumers"

    static let insertTopic = "INSERT INTO pubsub_topics (name, last_seq) VALUES (?1, 0) RETURNING id"
    static let updateTopic = "UPDATE pubsub_topics SET last_seq = ?2 WHERE id = ?1"
    static let insertMessage = """
        INSERT INTO pubsub_messages (topic_id, seq, published_at, expires_at, bytes, content_type, metadata, data)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
        """

    static let insertConsumer = """
        INSERT INTO pubsub_consumers (group_name, topic_id, cursor) VALUES (?1, ?2, ?3) RETURNING id
        """
    static let updateCursor = "UPDATE pubsub_consumers SET cursor = ?2 WHERE id = ?1"
    static let deleteConsumer = "DELETE FROM pubsub_consumers WHERE id = ?1"
    static let deleteConsumerPending = "DELETE FROM pubsub_pending WHERE consumer_id = ?1"

    /// A consumer's pending messages that are visible again (?3 = now), with the message when it still exists.
    static let due = """
        SELECT p.seq, p.attempt, m.published_at, m.expires_at, m.content_type, m.metadata, m.data
        FROM pubsub_pending p LEFT JOIN pubsub_messages m ON m.topic_id = ?2 AND m.seq = p.seq
        WHERE p.consumer_id = ?1 AND p.visible_at <= ?3 ORDER BY p.seq LIMIT ?4
        """
    /// Messages after a cursor.
    static let after = """
        SELECT seq, published_at, expires_at, content_type, metadata, data FROM pubsub_messages
        WHERE topic_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3
        """
    static let lease = "UPDATE pubsub_pending SET attempt = ?3, visible_at = ?4 WHERE consumer_id = ?1 AND seq = ?2"
    static let insertPending = """
        INSERT OR REPLACE INTO pubsub_pending (consumer_id, seq, attempt, visible_at) VALUES (?1, ?2, 1, ?3)
        """
    static let deletePending = "DELETE FROM pubsub_pending WHERE consumer_id = ?1 AND seq = ?2"
    static let nextVisible = "SELECT MIN(visible_at) FROM pubsub_pending WHERE consumer_id = ?1 AND visible_at > ?2"
    static let ack = "DELETE FROM pubsub_pending WHERE consumer_id = ?1 AND seq = ?2 AND attempt = ?3"
    static let nack = "UPDATE pubsub_pending SET visible_at = ?4 WHERE consumer_id = ?1 AND seq = ?2 AND attempt = ?3"
    static let oldestPending = "SELECT MIN(seq) FROM pubsub_pending WHERE consumer_id = ?1"

    // Trimming.
    /// `expires_at IS NOT NULL` lets the planner take the partial index: without it, it scanned the whole log in
    /// `topic_id` order (to group without sorting), on every trim.
    static let expiredUsage = """
        SELECT topic_id, COUNT(*), SUM(bytes) FROM pubsub_messages
        WHERE expires_at IS NOT NULL AND expires_at <= ?1 GROUP BY topic_id
        """
    static let deleteExpired = "DELETE FROM pubsub_messages WHERE expires_at <= ?1"
    /// The oldest message of a topic published at or after ?2, up to sequence ?3 (scans only the older ones, in
    /// sequence order, and none past ?3).
    static let firstYoung = """
        SELECT seq FROM pubsub_messages WHERE topic_id = ?1 AND seq <= ?3 AND published_at >= ?2 ORDER BY seq LIMIT 1
        """
    static let firstSequence = "SELECT MIN(seq) FROM pubsub_messages WHERE topic_id = ?1"
    static let oldest = "SELECT seq, bytes FROM pubsub_messages WHERE topic_id = ?1 AND seq < ?2 ORDER BY seq"
    static let rangeUsage = """
        SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM pubsub_messages WHERE topic_id = ?1 AND seq <= ?2
        """
    static let deleteRange = "DELETE FROM pubsub_messages WHERE topic_id = ?1 AND seq <= ?2"
    /// Pending entries whose message is gone (trimmed by retention, expired): they must not hold back trimming.
    static let deleteDanglingPending = """
        DELETE FROM pubsub_pending WHERE NOT EXISTS (
            SELECT 1 FROM pubsub_consumers c JOIN pubsub_messages m ON m.topic_id = c.topic_id
            WHERE c.id = pubsub_pending.consumer_id AND m.seq = pubsub_pending.seq
        )
        """
}
