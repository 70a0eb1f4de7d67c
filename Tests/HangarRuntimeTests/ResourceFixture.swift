import Foundation
import Logging

@testable import HangarRuntime

/// The node the resource suites load their resource files into: tenants `team-a` (apps `orders`, `billing`) and
/// `team-b` (app `orders`), and a `pubsub.in-memory` component named `pubsub`.
enum ResourceFixture {
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// The configuration loaded from these resource files (by name) beside the fixture's tenants and component.
    static func load(_ files: [String: String]) throws -> NodeConfiguration {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("hangar-\(UUID().uuidString)").path
        for sub in ["tenancy", "resources"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(sub)", withIntermediateDirectories: true)
        }
        let tenants = """
            apiVersion: hangar.dev/v1alpha1
            kind: Tenant
            metadata: {name: team-a}
            spec:
              apps: [{appId: orders}, {appId: billing}]
            ---
            apiVersion: hangar.dev/v1alpha1
            kind: Tenant
            metadata: {name: team-b}
            spec:
              apps: [{appId: orders}]
            """
        try tenants.write(toFile: "\(root)/tenancy/tenants.yaml", atomically: true, encoding: .utf8)
        let component = """
            apiVersion: dapr.io/v1alpha1
            kind: Component
            metadata: {name: pubsub}
            spec: {type: pubsub.in-memory, version: v1}
            """
        try component.write(toFile: "\(root)/resources/0-pubsub.yaml", atomically: true, encoding: .utf8)
        for (name, text) in files {
            try text.write(toFile: "\(root)/resources/\(name)", atomically: true, encoding: .utf8)
        }
        return try NodeConfiguration.load(
            tenancyDirectory: "\(root)/tenancy", resourcesDirectory: "\(root)/resources", registry: .node,
            logger: logger)
    }
}
