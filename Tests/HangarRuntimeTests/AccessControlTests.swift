import Foundation
import Logging
import Testing

@testable import HangarRuntime

@Suite("Configuration accessControl: parsing, the operations trie and Dapr's decisions")
struct AccessControlTests {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
    let caller = AppID(namespace: "team-a", appId: "caller")

    /// A trie holding `operations` (each allowed, with its name as its action so a match says which one it was).
    func trie(_ operations: [String]) -> OperationTrie {
        var trie = OperationTrie()
        for operation in operations { trie.insert(operation, .init(byVerb: [:], action: operation)) }
        return trie
    }

    @Test(
        "a segment glob matches any run of characters within the segment",
        arguments: [
            ("/ABC", "/A*", true), ("/ABC.a", "/A*", true), ("/ABC", "/*C", true), ("/ABC.a", "/*a", true),
            ("/abcd", "/a*d", true), ("/ABC.a", "/AB*.a", true), ("/abc", "/a*x", false), ("/a", "/a*", true),
            ("/ba", "/a*", false), ("/abc", "/abc", true), ("/abc", "/ab", false),
        ])
    func glob(text: String, pattern: String, matches: Bool) {
        #expect(OperationTrie.glob(text, pattern) == matches)
    }

    @Test(
        "the trie matches segments, '*' as the last segment, '/**' at any depth and globs, as Dapr's does",
        arguments: [
            (["/orders"], "/orders", "/orders"),
            (["/orders"], "/orders/1", "/orders"),  // a node with an action answers as soon as it is reached
            (["/orders"], "/order", nil),
            (["/orders/*"], "/orders/1", "/orders/*"),
            (["/orders/*"], "/orders", "/orders/*"),  // `/a/*` also matches `/a`
            (["/orders/*"], "/orders/1/2", nil),  // one level only
            (["/orders/**"], "/orders/1/2/3", "/orders/**"),
            (["/orders/**"], "/orders/1", "/orders/**"),
            (["/*/items"], "/orders/items", nil),  // a `/*` is never taken mid-path
            (["/order*"], "/orders", "/order*"),
            (["/order*/x"], "/orders/x", "/order*/x"),
            (["/a/b", "/a/*"], "/a/c", "/a/*"),
            (["/a/*", "/a/b"], "/a/b", "/a/*"),  // the first child that matches wins, in the order written
            (["/a/b", "/a/*"], "/a/b", "/a/b"),
            (["/a", "/a"], "/a", "/a"),
            (["/"], "/", "/"),
        ] as [([String], String, String?)])
    func trieMatches(operations: [String], operation: String, expected: String?) {
        #expect(trie(operations).search(operation)?.action == expected)
    }

    @Test("of two operations with the same name, the first one written keeps its action")
    func firstWins() {
        var trie = OperationTrie()
        trie.insert("/a", .init(byVerb: [:], action: "allow"))
        trie.insert("/a", .init(byVerb: [:], action: "deny"))
        #expect(trie.search("/a")?.action == "allow")
    }

    func list(
        _ spec: AccessControlSpec, http: Bool = false
    ) throws -> AccessControlList {
        try #require(AccessControlList(spec, isHTTP: http))
    }

    @Test("no trust domain, default action or policy is no access control; the default defaults as Dapr's does")
    func defaults() throws {
        #expect(AccessControlList(AccessControlSpec(), isHTTP: false) == nil)
        #expect(AccessControlList(AccessControlSpec(policies: []), isHTTP: false) == nil)
        // Policies given and no default: deny. No list at all (only a trust domain): deny too. An empty list: allow.
        let withPolicies = try list(AccessControlSpec(policies: [.init(appId: "other", namespace: "team-a")]))
        #expect(withPolicies.defaultAction == "deny")
        #expect(!withPolicies.allows(caller, trustDomain: "public", operation: "x", verb: "NONE"))
        #expect(try list(AccessControlSpec(trustDomain: "public")).defaultAction == "deny")
        #expect(try list(AccessControlSpec(trustDomain: "public", policies: [])).defaultAction == "allow")
        #expect(
            try list(AccessControlSpec(defaultAction: "Allow")).allows(
                caller, trustDomain: "public", operation: "x", verb: "NONE"))
        // Anything but allow denies.
        #expect(
            !(try list(AccessControlSpec(defaultAction: "alow"))).allows(
                caller, trustDomain: "public", operation: "x", verb: "NONE"))
    }

    @Test("a policy is found by app and namespace, and applies only to its trust domain")
    func lookup() throws {
        let acl = try list(
            AccessControlSpec(
                defaultAction: "deny",
                policies: [.init(appId: "caller", namespace: "team-a", trustDomain: "public", defaultAction: "allow")]))
        #expect(acl.allows(caller, trustDomain: "public", operation: "x", verb: "NONE"))
        #expect(!acl.allows(caller, trustDomain: "example.org", operation: "x", verb: "NONE"))
        #expect(
            !acl.allows(
                AppID(namespace: "team-b", appId: "caller"), trustDomain: "public", operation: "x", verb: "NONE"))
        #expect(
            !acl.allows(AppID(namespace: "team-a", appId: "other"), trustDomain: "public", operation: "x", verb: "NONE")
        )
    }

    @Test("gRPC apps: an operation's action decides, with its case kept; else the policy's default")
    func grpcOperations() throws {
        let acl = try list(
            AccessControlSpec(
                defaultAction: "allow",
                policies: [
                    .init(
                        appId: "caller", namespace: "team-a", defaultAction: "deny",
                        operations: [
                            .init(name: "orders/*", httpVerbs: ["GET"], action: "allow"),
                            .init(name: "/Pkg.Svc/Get", action: "allow"), .init(name: "/admin/**", action: "deny"),
                            .init(name: "/open", action: ""),
                        ])
                ]))
        #expect(acl.allows(caller, trustDomain: "public", operation: "orders/1", verb: "NONE"))
        #expect(acl.allows(caller, trustDomain: "public", operation: "/Pkg.Svc/Get", verb: "NONE"))
        #expect(!acl.allows(caller, trustDomain: "public", operation: "/pkg.svc/get", verb: "NONE"))
        #expect(!acl.allows(caller, trustDomain: "public", operation: "admin/a/b", verb: "NONE"))
        #expect(!acl.allows(caller, trustDomain: "public", operation: "payments", verb: "NONE"))
        // An operation without an action denies (Dapr reads it as "").
        #expect(!acl.allows(caller, trustDomain: "public", operation: "open", verb: "NONE"))
    }

    @Test("HTTP apps: matched without case; the verb's action, else '*', else the policy's (or global) default")
    func httpOperations() throws {
        let operations: [AccessControlSpec.Operation] = [
            .init(name: "/Orders/**", httpVerbs: ["GET", "PUT"], action: "allow"),
            .init(name: "/orders-admin", httpVerbs: ["*"], action: "deny"),
            .init(name: "/lower", httpVerbs: ["get"], action: "allow"),
        ]
        let acl = try list(
            AccessControlSpec(
                defaultAction: "allow",
                policies: [.init(appId: "caller", namespace: "team-a", defaultAction: "deny", operations: operations)]),
            http: true)
        #expect(acl.allows(caller, trustDomain: "public", operation: "orders/1", verb: "GET"))
        #expect(acl.allows(caller, trustDomain: "public", operation: "ORDERS/1/x", verb: "PUT"))
        #expect(!acl.allows(caller, trustDomain: "public", operation: "orders/1", verb: "POST"))
        #expect(!acl.allows(caller, trustDomain: "public", operation: "orders-admin", verb: "GET"))
        // Verb names are matched as written: `get` is not GET.
        #expect(!acl.allows(caller, trustDomain: "public", operation: "lower", verb: "GET"))
        // No verb (a gRPC caller without http_extension): the policy's own default decides.
        #expect(!acl.allows(caller, trustDomain: "public", operation: "orders/1", verb: "NONE"))
        // An unmatched verb without a policy default falls back to the global default.
        let global = try list(
            AccessControlSpec(
                defaultAction: "allow", policies: [.init(appId: "caller", namespace: "team-a", operations: operations)]),
            http: true)
        #expect(global.allows(caller, trustDomain: "public", operation: "orders/1", verb: "POST"))
        #expect(!global.allows(caller, trustDomain: "public", operation: "orders/1", verb: "NONE"))
    }

    // MARK: Parsing and which Configuration guards an app

    func load(tenant: String, resources: String) throws -> NodeConfiguration {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("hangar-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: "\(root)/tenancy", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(root)/resources", withIntermediateDirectories: true)
        try tenant.write(toFile: "\(root)/tenancy/t.yaml", atomically: true, encoding: .utf8)
        try resources.write(toFile: "\(root)/resources/c.yaml", atomically: true, encoding: .utf8)
        return try NodeConfiguration.load(
            tenancyDirectory: "\(root)/tenancy", resourcesDirectory: "\(root)/resources", registry: .node,
            logger: logger)
    }

    static let tenant = """
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata: {name: team-a}
        spec:
          trustDomain: Example.org
          apps:
            - appId: caller
            - appId: web
              config: webconfig
              appChannel: {protocol: http}
            - appId: lost
              config: nowhere
        """

    static func configuration(_ name: String, namespace: String? = "team-a", _ accessControl: String) -> String {
        """
        apiVersion: dapr.io/v1alpha1
        kind: Configuration
        metadata:
          name: \(name)
        \(namespace.map { "  namespace: \($0)" } ?? "")
        spec:
          tracing: {samplingRate: "1"}
          accessControl:
        \(accessControl)
        ---

        """
    }

    @Test("a Configuration's accessControl is read; its other fields are ignored")
    func parses() throws {
        let configuration = try load(
            tenant: Self.tenant,
            resources: Self.configuration(
                "appconfig",
                """
                    defaultAction: deny
                    trustDomain: public
                    policies:
                      - appId: caller
                        namespace: team-a
                        trustDomain: example.org
                        defaultAction: allow
                        operations:
                          - {name: /orders/**, httpVerb: [GET, POST], action: allow}
                """))
        #expect(configuration.tenants[0].trustDomain == "example.org")
        #expect(configuration.tenants[0].apps[1].config == "webconfig")
        let resource = try #require(configuration.configurations.first)
        #expect(resource.error == nil)
        #expect(resource.key == "team-a/appconfig")
        #expect(resource.ignoredFields == ["tracing"])
        #expect(
            resource.accessControl
                == AccessControlSpec(
                    defaultAction: "deny", trustDomain: "public",
                    policies: [
                        .init(
                            appId: "caller", namespace: "team-a", trustDomain: "example.org", defaultAction: "allow",
                            operations: [.init(name: "/orders/**", httpVerbs: ["GET", "POST"], action: "allow")])
                    ]))
    }

    @Test(
        "a policy without appId, namespace or trustDomain makes its Configuration invalid, naming the field",
        arguments: [
            ("      - {namespace: team-a, trustDomain: public}", "spec.accessControl.policies[0].appId"),
            ("      - {appId: caller, trustDomain: public}", "spec.accessControl.policies[0].namespace"),
            ("      - {appId: caller, namespace: team-a}", "spec.accessControl.policies[0].trustDomain"),
            (
                "      - {appId: caller, namespace: team-a, trustDomain: public, operations: [{action: allow}]}",
                "spec.accessControl.policies[0].operations[0].name"
            ),
            (
                "      - {appId: caller, namespace: team-a, trustDomain: public, defaultActon: allow}",
                "spec.accessControl.policies[0].defaultActon"
            ),
        ])
    func refusesIncompletePolicies(policy: String, field: String) throws {
        let configuration = try load(
            tenant: Self.tenant,
            resources: Self.configuration("appconfig", "    defaultAction: allow\n    policies:\n  \(policy)")
                + Self.configuration("webconfig", namespace: nil, "    defaultAction: allow"))
        let invalid = try #require(configuration.configurations.first { $0.name == "appconfig" })
        #expect(invalid.error?.field == field, "\(String(describing: invalid.error))")
        #expect(configuration.configurations.first { $0.name == "webconfig" }?.error == nil)

        // The other Configuration keeps guarding its app; the broken one's apps are refused, with the reason.
        let policies = AccessControlPolicies(configuration, previous: nil)
        guard case .list = policies.byApp[AppID(namespace: "team-a", appId: "web")] else {
            Issue.record("web is not guarded by webconfig")
            return
        }
        guard case .unusable(let why) = policies.byApp[caller] else {
            Issue.record("caller is not refused")
            return
        }
        #expect(why.contains(field))
        #expect(policies.statuses.first { $0.name == "appconfig" }?.lastGoodInForce == false)
    }

    @Test("an app uses the Configuration it names, else its namespace's only one; a missing name refuses calls")
    func resolution() throws {
        let configuration = try load(
            tenant: Self.tenant,
            resources: Self.configuration("appconfig", "    defaultAction: deny")
                + Self.configuration("webconfig", namespace: nil, "    defaultAction: allow"))
        let policies = AccessControlPolicies(configuration, previous: nil)
        guard case .list(_, let name) = policies.byApp[caller] else {
            Issue.record("caller is not guarded")
            return
        }
        #expect(name == "team-a/appconfig")
        guard case .list(let web, let webName) = policies.byApp[AppID(namespace: "team-a", appId: "web")] else {
            Issue.record("web is not guarded")
            return
        }
        #expect(webName == "*/webconfig" && web.isHTTP)
        guard case .unusable(let why) = policies.byApp[AppID(namespace: "team-a", appId: "lost")] else {
            Issue.record("lost is not refused")
            return
        }
        #expect(why.contains("'nowhere'"))
        #expect(policies.trustDomains["team-a"] == "example.org")

        // Two in the namespace: an app that names none must name one.
        let two = try load(
            tenant: Self.tenant,
            resources: Self.configuration("appconfig", "    defaultAction: deny")
                + Self.configuration("other", "    defaultAction: allow"))
        guard case .unusable(let ambiguous) = AccessControlPolicies(two, previous: nil).byApp[caller] else {
            Issue.record("caller is not refused")
            return
        }
        #expect(ambiguous.contains("several Configurations (appconfig, other)"))
    }

    @Test("an invalid change keeps the Configuration's last good access control in force")
    func lastGood() throws {
        let good = try load(tenant: Self.tenant, resources: Self.configuration("appconfig", "    defaultAction: deny"))
        let first = AccessControlPolicies(good, previous: nil)
        let broken = try load(
            tenant: Self.tenant, resources: Self.configuration("appconfig", "    defaultAction: deny\n    bogus: 1"))
        let second = AccessControlPolicies(broken, previous: first)
        guard case .list(let list, _) = second.byApp[caller] else {
            Issue.record("the last good version is not in force")
            return
        }
        #expect(list.defaultAction == "deny")
        #expect(second.statuses.first?.lastGoodInForce == true)
        #expect(second.statuses.first?.error?.contains("bogus") == true)
        // A Configuration declared twice: the second declaration is reported and guards nothing.
        let twice = try load(
            tenant: Self.tenant,
            resources: Self.configuration("appconfig", "    defaultAction: deny")
                + Self.configuration("appconfig", "    defaultAction: allow"))
        #expect(twice.configurations.map { $0.error == nil } == [true, false])
    }
}
