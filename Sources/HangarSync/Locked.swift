/// The lock Hangar's code uses around shared state: Synchronization's `Mutex`, with the same API, except in a
/// ThreadSanitizer build (`scripts/tsan.sh` sets `HANGAR_TSAN=1`, which defines `HANGAR_TSAN` for Hangar's targets).
///
/// Why: on Linux `Mutex` locks with atomics and futexes inside the Synchronization library, which is not
/// instrumented, so ThreadSanitizer sees none of its acquires and releases and reports every access it protects as a
/// race (checked with Swift 6.3.1: two threads adding to a `Mutex<Int>` under `withLock` are reported, at -Onone and
/// -O). A ThreadSanitizer run of the test suite was nothing but those reports. In that build `Locked` is a pthread
/// mutex, which ThreadSanitizer intercepts, so that what it reports is real. Every other build uses `Mutex` itself:
/// nothing changes in hangard.
#if HANGAR_TSAN
    #if canImport(Glibc)
        import Glibc
    #elseif canImport(Darwin)
        import Darwin
    #endif

    package struct Locked<Value>: ~Copyable, @unchecked Sendable {
        private final class Storage {
            let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
            var value: Value

            init(_ value: Value) {
                self.value = value
                mutex.initialize(to: pthread_mutex_t())
                pthread_mutex_init(mutex, nil)
            }

            deinit {
                pthread_mutex_destroy(mutex)
                mutex.deallocate()
            }
        }

        private let storage: Storage

        package init(_ initialValue: consuming sending Value) {
            storage = Storage(initialValue)
        }

        package borrowing func withLock<Result: ~Copyable, E: Error>(
            _ body: (inout Value) throws(E) -> Result
        ) throws(E) -> Result {
            pthread_mutex_lock(storage.mutex)
            defer { pthread_mutex_unlock(storage.mutex) }
            return try body(&storage.value)
        }

        package borrowing func withLockIfAvailable<Result: ~Copyable, E: Error>(
            _ body: (inout Value) throws(E) -> Result
        ) throws(E) -> Result? {
            guard pthread_mutex_trylock(storage.mutex) == 0 else { return nil }
            defer { pthread_mutex_unlock(storage.mutex) }
            return try body(&storage.value)
        }
    }
#else
    package import Synchronization

    package typealias Locked<Value: ~Copyable> = Mutex<Value>
#endif
