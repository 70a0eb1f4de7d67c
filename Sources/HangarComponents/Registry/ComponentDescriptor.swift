/// Everything the runtime knows about one component type before it creates one: which building block it serves,
/// the versions and metadata it accepts, whether it blocks, and how to make it. Each backend target describes its
/// types and registers them (`register(into:)`), so the runtime depends on no backend.
package struct ComponentDescriptor: Sendable {
    /// Opens one component instance: blocking I/O is allowed (it runs on the thread pool unless the type executes
    /// inline); a failure leaves the component DOWN and is retried.
    package typealias Opener<Component> = @Sendable () throws -> Component

    /// Judges a definition and returns how to open it. Everything that can be judged from the definition alone
    /// (metadata values) is refused here, with the field; what needs I/O happens in the opener.
    package typealias Factory<Component> =
        @Sendable (ComponentDefinition, ComponentContext) throws(ComponentDefinitionError) -> Opener<Component>

    /// The factory, typed by the building block the component serves: a block adds its case with its protocol.
    package enum Make: Sendable {
        case state(Factory<any StateStore>)
        case pubsub(Factory<any PubSub>)
        case secretstores(Factory<any SecretStore>)

        package var block: BuildingBlock {
            switch self {
            case .state: .state
            case .pubsub: .pubsub
            case .secretstores: .secretstores
            }
        }
    }

    /// `spec.type`, e.g. `state.sqlite`.
    package let type: String
    /// The `spec.version` values accepted.
    package let versions: Set<String>
    /// The metadata this type reads, besides what its building block and the pool read for every component.
    package let metadata: [ComponentMetadataField]
    /// Whether its operations never block: they run on the caller's event loop and answer `Eventual.ready`, it is
    /// opened at once, and it needs no fair queue. A blocking type runs its work on the thread pool.
    package let executesInline: Bool
    /// How many operations a blocking type runs at once when its metadata does not set `maxConcurrentOperations`
    /// (the fair queue's capacity); nil: the pool's default. A type that batches what it has in flight (group
    /// commit) wants more than the pool's default, which would bound its batches.
    package let defaultConcurrency: Int?
    /// The files and directories a component of this type reads, from its metadata: the node watches them and,
    /// when they change, asks the open component whether its source changed (`SecretStore.sourceChanged`).
    package let watchedPaths: (@Sendable ([String: String]) -> [String])?
    package let make: Make

    package init(
        type: String, versions: Set<String> = ["v1"], metadata: [ComponentMetadataField] = [], executesInline: Bool,
        defaultConcurrency: Int? = nil, watchedPaths: (@Sendable ([String: String]) -> [String])? = nil, make: Make
    ) {
        self.type = type
        self.versions = versions
        self.metadata = metadata
        self.executesInline = executesInline
        self.defaultConcurrency = defaultConcurrency
        self.watchedPaths = watchedPaths
        self.make = make
    }

    package var block: BuildingBlock { make.block }

    /// Every metadata name a component of this type may give: its own, its block's and the pool's.
    package var acceptedMetadata: [ComponentMetadataField] {
        metadata + block.metadata + ComponentRegistry.poolMetadata
    }
}
