import Foundation

/// An app's programmatic subscriptions as its app channel answered them (reference §2b), turned into
/// `SubscriptionSpec`s the same way for both kinds of app: rules in order (each `match` compiled), then the default
/// route. Entries that cannot be used are left out and said why in `problems`, which the caller logs.
///
/// A knowing departure from Dapr: an entry whose `match` does not compile (or without pub/sub or topic) is left out
/// alone, where Dapr fails the app's whole list.
package struct AppSubscriptionList: Sendable, Hashable {
    package var subscriptions: [SubscriptionSpec] = []
    /// Entries left out, or an answer taken as no subscriptions, each with why.
    package var problems: [String] = []

    package init(subscriptions: [SubscriptionSpec] = [], problems: [String] = []) {
        self.subscriptions = subscriptions
        self.problems = problems
    }

    /// One entry of the app's answer, in the terms both protocols share.
    package struct Entry: Sendable {
        package var pubsubName: String
        package var topic: String
        package var metadata: [String: String]
        package var rules: [(match: String, path: String)]
        /// `routes.default`, or an HTTP app's `route` when it gives no default ("" for none).
        package var defaultPath: String
        package var deadLetterTopic: String
        /// `bulkSubscribe` when present: enabled, maxMessagesCount, maxAwaitDurationMs (0: Dapr's default).
        package var bulk: (enabled: Bool, maxMessagesCount: Int, maxAwaitDurationMs: Int)?

        package init(
            pubsubName: String, topic: String, metadata: [String: String] = [:],
            rules: [(match: String, path: String)] = [], defaultPath: String = "", deadLetterTopic: String = "",
            bulk: (enabled: Bool, maxMessagesCount: Int, maxAwaitDurationMs: Int)? = nil
        ) {
            self.pubsubName = pubsubName
            self.topic = topic
            self.metadata = metadata
            self.rules = rules
            self.defaultPath = defaultPath
            self.deadLetterTopic = deadLetterTopic
            self.bulk = bulk
        }
    }

    /// What an entry without any route becomes.
    package enum WithoutRoutes: Sendable {
        /// An HTTP app's: removed, with a warning (Dapr's `filterSubscriptions`).
        case removed
        /// A gRPC app's: one rule with path `""`, so that a plain gRPC subscription always delivers.
        case plainRule
    }

    /// The subscriptions of `entries`, in their order.
    package init(entries: [Entry], withoutRoutes: WithoutRoutes) {
        for entry in entries {
            let name = "\(entry.pubsubName)/\(entry.topic)"
            guard !entry.pubsubName.isEmpty, !entry.topic.isEmpty else {
                problems.append("subscription '\(name)' left out: its pubsub name and topic are required")
                continue
            }
            var routes: [SubscriptionRoute] = []
            do throws(RouteMatchError) {
                for rule in entry.rules {
                    let match = rule.match.trimmingCharacters(in: .whitespacesAndNewlines)
                    routes.append(
                        SubscriptionRoute(match: match.isEmpty ? nil : try RouteMatch(match), path: rule.path))
                }
            } catch {
                problems.append("subscription '\(name)' left out: \(error)")
                continue
            }
            if !entry.defaultPath.isEmpty { routes.append(SubscriptionRoute(path: entry.defaultPath)) }
            if routes.isEmpty {
                switch withoutRoutes {
                case .removed:
                    problems.append("subscription '\(name)' left out: it has no route (no rules, default or route)")
                    continue
                case .plainRule:
                    routes.append(SubscriptionRoute(path: ""))
                }
            }
            var bulk: BulkSubscribeSpec?
            if let settings = entry.bulk, settings.enabled {
                bulk = BulkSubscribeSpec(
                    maxMessagesCount: settings.maxMessagesCount > 0
                        ? settings.maxMessagesCount : BulkSubscribeSpec.defaultMaxMessagesCount,
                    maxAwaitDurationMs: settings.maxAwaitDurationMs > 0
                        ? settings.maxAwaitDurationMs : BulkSubscribeSpec.defaultMaxAwaitDurationMs)
            }
            subscriptions.append(
                SubscriptionSpec(
                    origin: .programmatic, pubsubName: entry.pubsubName, topic: entry.topic, routes: routes,
                    deadLetterTopic: entry.deadLetterTopic.isEmpty ? nil : entry.deadLetterTopic, bulk: bulk,
                    metadata: entry.metadata))
        }
    }

    /// An HTTP app's answer to `GET /dapr/subscribe`: 200 is parsed (an empty body is no subscriptions), 404 is
    /// none, another status is none with a problem. Throws when a 200 body is not the JSON Dapr reads (the fetch
    /// is then retried). Keys match case-insensitively, as Go's JSON decoder matches them; `routes.default` takes
    /// precedence over `route`.
    package static func http(status: Int, body: some Collection<UInt8>) throws(AppSubscriptionListError)
        -> AppSubscriptionList
    {
        switch status {
        case 200: break
        case 404: return AppSubscriptionList()
        default:
            return AppSubscriptionList(problems: [
                "GET /dapr/subscribe answered HTTP \(status); taken as no subscriptions"
            ])
        }
        let data = Data(body)
        if data.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return AppSubscriptionList() }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw AppSubscriptionListError("the body of GET /dapr/subscribe is not JSON: \(error.localizedDescription)")
        }
        if json is NSNull { return AppSubscriptionList() }
        guard let items = json as? [Any] else {
            throw AppSubscriptionListError("the body of GET /dapr/subscribe is not a JSON array")
        }
        var entries: [Entry] = []
        for (index, item) in items.enumerated() {
            if item is NSNull { continue }
            let where_ = "GET /dapr/subscribe [\(index)]"
            guard let object = item as? [String: Any] else {
                throw AppSubscriptionListError("\(where_) is not a JSON object")
            }
            var entry = Entry(
                pubsubName: try string(object, "pubsubname", where_), topic: try string(object, "topic", where_))
            entry.deadLetterTopic = try string(object, "deadLetterTopic", where_)
            if let metadata = try self.object(object, "metadata", where_) {
                for (key, value) in metadata where !(value is NSNull) {
                    guard let value = value as? String else {
                        throw AppSubscriptionListError("\(where_).metadata.\(key) is not a string")
                    }
                    entry.metadata[key] = value
                }
            }
            let route = try string(object, "route", where_)
            if let routes = try self.object(object, "routes", where_) {
                let ruleList = field(routes, "rules")
                if let ruleList, !(ruleList is NSNull) {
                    guard let rules = ruleList as? [Any] else {
                        throw AppSubscriptionListError("\(where_).routes.rules is not an array")
                    }
                    for (position, rule) in rules.enumerated() {
                        if rule is NSNull { continue }
                        let at = "\(where_).routes.rules[\(position)]"
                        guard let rule = rule as? [String: Any] else {
                            throw AppSubscriptionListError("\(at) is not a JSON object")
                        }
                        entry.rules.append((try string(rule, "match", at), try string(rule, "path", at)))
                    }
                }
                entry.defaultPath = try string(routes, "default", where_ + ".routes")
            }
            if entry.defaultPath.isEmpty { entry.defaultPath = route }
            if let bulk = try self.object(object, "bulkSubscribe", where_) {
                let enabled = field(bulk, "enabled")
                guard enabled == nil || enabled is NSNull || isBool(enabled) else {
                    throw AppSubscriptionListError("\(where_).bulkSubscribe.enabled is not a boolean")
                }
                entry.bulk = (
                    (enabled as? Bool) ?? false, try int(bulk, "maxMessagesCount", where_),
                    try int(bulk, "maxAwaitDurationMs", where_)
                )
            }
            entries.append(entry)
        }
        return AppSubscriptionList(entries: entries, withoutRoutes: .removed)
    }

    /// The value of `key` in `object`: the exact key first, else one that matches ignoring case (Go's rule).
    private static func field(_ object: [String: Any], _ key: String) -> Any? {
        if let value = object[key] { return value }
        let lower = key.lowercased()
        return object.first { $0.key.lowercased() == lower }?.value
    }

    private static func string(_ object: [String: Any], _ key: String, _ where_: String)
        throws(AppSubscriptionListError) -> String
    {
        switch field(object, key) {
        case nil, is NSNull: return ""
        case let value as String: return value
        default: throw AppSubscriptionListError("\(where_).\(key) is not a string")
        }
    }

    private static func object(_ object: [String: Any], _ key: String, _ where_: String)
        throws(AppSubscriptionListError) -> [String: Any]?
    {
        switch field(object, key) {
        case nil, is NSNull: return nil
        case let value as [String: Any]: return value
        default: throw AppSubscriptionListError("\(where_).\(key) is not a JSON object")
        }
    }

    private static func int(_ object: [String: Any], _ key: String, _ where_: String)
        throws(AppSubscriptionListError) -> Int
    {
        let value = field(object, key)
        if value == nil || value is NSNull { return 0 }
        guard !isBool(value), let number = value as? NSNumber, number.doubleValue == number.doubleValue.rounded(),
            abs(number.doubleValue) <= Double(Int32.max)
        else { throw AppSubscriptionListError("\(where_).\(key) is not a 32-bit integer") }
        return number.intValue
    }

    /// Whether a JSONSerialization value is a JSON boolean (an NSNumber of type char).
    private static func isBool(_ value: Any?) -> Bool {
        guard let number = value as? NSNumber else { return false }
        return String(cString: number.objCType) == "c"
    }
}

/// An app's answer to the subscription list request cannot be read.
package struct AppSubscriptionListError: Error, Sendable, Hashable, CustomStringConvertible {
    package var message: String
    package init(_ message: String) { self.message = message }
    package var description: String { message }
}
