extension InMemoryStateStore {
    /// `state.in-memory`: no metadata of its own; never blocks.
    package static let descriptor = ComponentDescriptor(
        type: "state.in-memory", executesInline: true,
        make: .state { _, _ in { InMemoryStateStore() } })
}
