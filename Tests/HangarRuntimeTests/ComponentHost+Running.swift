@testable import HangarRuntime

extension ComponentHost {
    /// Runs `body` while the host's service runs (as hangard's service group would), then stops the service, which
    /// closes every component.
    func running<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self, returning: T.self) { group in
            group.addTask { try await self.run() }
            defer { group.cancelAll() }
            return try await body()
        }
    }
}
