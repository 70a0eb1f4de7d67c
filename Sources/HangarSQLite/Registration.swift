public import HangarComponents

/// Registers this target's component types: `state.sqlite`.
public func register(into registry: inout ComponentRegistry) {
    registry.register(SQLiteStateStore.descriptor)
}
