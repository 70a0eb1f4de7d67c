public import NIOCore

/// The outcome of an operation that completes either at once or later on an event loop.
///
/// Non-blocking components (`state.in-memory`) answer `.ready`, and a request then runs from the front-end's
/// decoder to the store and back as plain calls on the connection's event loop: no future, promise or callback is
/// allocated for it. Components that must wait on a backend (`state.sqlite` on the thread pool) answer `.later`,
/// and the same chain continues when their future completes.
public enum Eventual<Value: Sendable>: Sendable {
    case ready(Result<Value, any Error>)
    case later(EventLoopFuture<Value>)

    @inlinable
    public static func success(_ value: Value) -> Self { .ready(.success(value)) }

    @inlinable
    package static func failure(_ error: any Error) -> Self { .ready(.failure(error)) }

    /// Runs `body` now, its value or error being the outcome.
    @inlinable
    package init(catching body: () throws -> Value) {
        self = .ready(Result(catching: body))
    }

    @inlinable
    package func map<NewValue: Sendable>(
        _ transform: @escaping @Sendable (Value) -> NewValue
    ) -> Eventual<NewValue> {
        switch self {
        case .ready(let result): .ready(result.map(transform))
        case .later(let future): .later(future.map(transform))
        }
    }

    @inlinable
    package func flatMapThrowing<NewValue: Sendable>(
        _ transform: @escaping @Sendable (Value) throws -> NewValue
    ) -> Eventual<NewValue> {
        switch self {
        case .ready(.success(let value)): .ready(Result { try transform(value) })
        case .ready(.failure(let error)): .ready(.failure(error))
        case .later(let future): .later(future.flatMapThrowing(transform))
        }
    }

    /// Replaces a failure by the error `transform` returns.
    @inlinable
    package func mapError(_ transform: @escaping @Sendable (any Error) -> any Error) -> Eventual<Value> {
        switch self {
        case .ready(.success): self
        case .ready(.failure(let error)): .ready(.failure(transform(error)))
        case .later(let future): .later(future.flatMapErrorThrowing { throw transform($0) })
        }
    }

    /// Calls `body` with the result: now when it is ready, else when the future completes (on its event loop).
    @inlinable
    package func whenComplete(_ body: @escaping @Sendable (Result<Value, any Error>) -> Void) {
        switch self {
        case .ready(let result): body(result)
        case .later(let future): future.whenComplete(body)
        }
    }

    /// The outcome as a future on `eventLoop`.
    @inlinable
    package func future(on eventLoop: any EventLoop) -> EventLoopFuture<Value> {
        switch self {
        case .ready(let result): eventLoop.makeCompletedFuture(result)
        case .later(let future): future
        }
    }

    /// Waits for the value in an async context.
    @inlinable
    package func get() async throws -> Value {
        switch self {
        case .ready(let result): try result.get()
        case .later(let future): try await future.get()
        }
    }

    /// Joins every outcome: ready when all of them are, else a future of all their values, in order.
    package static func all(_ outcomes: [Eventual<Value>], on eventLoop: any EventLoop) -> Eventual<[Value]> {
        var values: [Value] = []
        values.reserveCapacity(outcomes.count)
        for outcome in outcomes {
            guard case .ready(let result) = outcome else {
                return .later(EventLoopFuture.whenAllSucceed(outcomes.map { $0.future(on: eventLoop) }, on: eventLoop))
            }
            switch result {
            case .success(let value): values.append(value)
            case .failure(let error): return .failure(error)
            }
        }
        return .success(values)
    }
}
