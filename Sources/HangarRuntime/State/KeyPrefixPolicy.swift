/// Where Dapr's `keyPrefix` puts keys *within* a namespace. The namespace always comes first, so no setting can
/// reach across tenants.
package enum KeyPrefixPolicy: Sendable, Hashable {
    case appId
    case componentName
    case namespacedAppId
    case none
    case literal(String)

    init(_ value: String?, source: String) throws(ConfigurationError) {
        switch value?.lowercased() {
        case nil, "", "appid": self = .appId
        case "name": self = .componentName
        case "namespace": self = .namespacedAppId
        case "none": self = .none
        default:
            let literal = value!
            guard !literal.contains(Names.keySeparator) else {
                throw ConfigurationError(
                    path: source, field: "spec.metadata.keyPrefix", message: "may not contain '||'")
            }
            self = .literal(literal)
        }
    }

    /// The physical key prefix for a caller: `<namespace>||[<part>||]`.
    func prefix(for app: AppID, component: String) -> String {
        switch self {
        // Concatenation rather than interpolation: this runs on every state call.
        case .appId: app.namespace + "||" + app.appId + "||"
        case .componentName: app.namespace + "||" + component + "||"
        case .namespacedAppId: app.namespace + "||" + app.namespace + "." + app.appId + "||"
        case .none: app.namespace + "||"
        case .literal(let literal): app.namespace + "||" + literal + "||"
        }
    }
}
