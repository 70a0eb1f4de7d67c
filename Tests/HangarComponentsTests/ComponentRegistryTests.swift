import HangarComponents
import HangarSQLite
import Logging
import NIOPosix
import Testing

/// The component registry: descriptors by type, and the checks every component's definition passes before it is
/// created.
@Suite("Component registry")
struct ComponentRegistryTests {
    /// A registry with one test type that takes `path` (required) and `mode`, in versions v1 and v2.
    static var registry: ComponentRegistry {
        var registry = ComponentRegistry()
        registry.register(
            ComponentDescriptor(
                type: "state.test", versions: ["v1", "v2"],
                metadata: [ComponentMetadataField("path", required: true), ComponentMetadataField("mode")],
                executesInline: true, make: .state { _, _ in { InMemoryStateStore() } }))
        return registry
    }

    static let context = ComponentContext(
        dataDirectory: "/data", threadPool: NIOThreadPool.singleton,
        eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
        logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))

    @Test("a type is found by its name and each accepted version, with its block")
    func lookup() throws {
        for version in ["v1", "v2"] {
            let descriptor = try Self.registry.check(
                ComponentDefinition(name: "c", type: "state.test", version: version, metadata: ["path": "p"]))
            #expect(descriptor.type == "state.test")
            #expect(descriptor.block == .state)
            #expect(descriptor.executesInline)
        }
        #expect(Self.registry.descriptor(for: "state.test") != nil)
        #expect(Self.registry.descriptor(for: "state.redis") == nil)
    }

    @Test("an unknown type is refused at spec.type, listing the supported ones")
    func unknownType() {
        let error = #expect(throws: ComponentDefinitionError.self) {
            try Self.registry.check(ComponentDefinition(name: "c", type: "state.redis"))
        }
        #expect(error?.field == "spec.type")
        #expect(error?.message == "component type 'state.redis' is not supported (supported: state.test)")
    }

    @Test("a version the type does not accept is refused at spec.version")
    func unknownVersion() {
        let error = #expect(throws: ComponentDefinitionError.self) {
            try Self.registry.check(
                ComponentDefinition(name: "c", type: "state.test", version: "v3", metadata: ["path": "p"]))
        }
        #expect(error?.field == "spec.version")
        #expect(error?.message.contains("v1, v2") == true)
    }

    @Test("unknown metadata is not refused but listed, as Dapr ignores it")
    func unknownMetadata() throws {
        let definition = ComponentDefinition(name: "c", type: "state.test", metadata: ["path": "p", "pth": "q", "a": "b"])
        _ = try Self.registry.check(definition)
        #expect(Self.registry.unknownMetadata(definition) == ["a", "pth"])
        #expect(Self.registry.unknownMetadata(ComponentDefinition(name: "c", type: "state.test", metadata: ["path": "p"])).isEmpty)
    }

    @Test("required metadata that is missing or empty is refused naming the field", arguments: [[:], ["path": ""]])
    func requiredMetadata(metadata: [String: String]) {
        let error = #expect(throws: ComponentDefinitionError.self) {
            try Self.registry.check(ComponentDefinition(name: "c", type: "state.test", metadata: metadata))
        }
        #expect(error?.field == "spec.metadata.path")
        #expect(error?.message == "is required by state.test")
    }

    @Test("the block's and the pool's metadata are accepted for every type of the block")
    func commonMetadata() throws {
        let metadata = ["path": "p", "keyPrefix": "name", "actorStateStore": "true", "maxConcurrentOperations": "2"]
        let definition = ComponentDefinition(name: "c", type: "state.test", metadata: metadata)
        _ = try Self.registry.check(definition)
        #expect(Self.registry.unknownMetadata(definition).isEmpty)
    }

    @Test("each backend target's register(into:) adds its types")
    func backendsRegister() throws {
        var registry = ComponentRegistry()
        HangarComponents.register(into: &registry)
        let local = ["secretstores.local.directory", "secretstores.local.env", "secretstores.local.file"]
        #expect(registry.types == ["pubsub.in-memory"] + local + ["state.in-memory"])
        HangarSQLite.register(into: &registry)
        #expect(registry.types == ["pubsub.in-memory", "pubsub.sqlite"] + local + ["state.in-memory", "state.sqlite"])
        let memory = try #require(registry.descriptor(for: "state.in-memory"))
        let sqlite = try #require(registry.descriptor(for: "state.sqlite"))
        #expect(memory.executesInline && memory.block == .state)
        #expect(!sqlite.executesInline && sqlite.block == .state)
        #expect(sqlite.metadata.map(\.name).contains("connectionString"))
        _ = try registry.check(
            ComponentDefinition(
                name: "s", type: "state.sqlite", metadata: ["connectionString": "s.db", "busyTimeout": "2s"]))
    }

    @Test("the SQLite factory refuses a bad value naming its field, before anything is opened")
    func sqliteFactoryRefusesBadValues() throws {
        let descriptor = SQLiteStateStore.descriptor
        guard case .state(let make) = descriptor.make else { Issue.record("not a state component"); return }
        let duration = #expect(throws: ComponentDefinitionError.self) {
            _ = try make(
                ComponentDefinition(name: "s", type: "state.sqlite", metadata: ["busyTimeout": "soon"]), Self.context)
        }
        #expect(duration?.field == "spec.metadata.busyTimeout")
        let table = #expect(throws: ComponentDefinitionError.self) {
            _ = try make(
                ComponentDefinition(name: "s", type: "state.sqlite", metadata: ["tableName": "no spaces"]), Self.context
            )
        }
        #expect(table?.field == "spec.metadata")
        #expect(table?.message.contains("table name") == true)
    }
}
