import Foundation
import Logging
import NIOCore
import Testing

@testable import HangarRuntime

@Suite("Service invocation: app channels, targets, methods and headers")
struct InvocationTests {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    func load(_ spec: String) throws -> NodeConfiguration {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("hangar-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try """
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-a
        spec:
        \(spec)
        """.write(toFile: "\(path)/t.yaml", atomically: true, encoding: .utf8)
        return try NodeConfiguration.load(tenancyDirectory: path, resourcesDirectory: nil, registry: .node, logger: logger)
    }

    @Test("an app channel is read with its protocol, address, health check and concurrency")
    func appChannel() throws {
        let configuration = try load(
            """
              apps:
                - appId: orders
                  appChannel:
                    protocol: grpc
                    address: 127.0.0.1:50051
                    maxConcurrency: 8
                    healthCheck: {path: /health, intervalSeconds: 2, timeoutSeconds: 0.25, threshold: 5}
                - appId: web
                  appChannel: {protocol: http, address: "unix:///run/web.sock"}
                - appId: plain
              allowInvocationFrom:
                - namespace: team-b
                  appIds: [checkout]
                  methods: [/orders/]
            """)
        let tenant = try #require(configuration.tenants.first)
        let orders = try #require(tenant.apps[0].appChannel)
        #expect(orders.protocol == .grpc)
        #expect(orders.address == .tcp(host: "127.0.0.1", port: 50051))
        #expect(orders.maxConcurrency == 8)
        #expect(orders.healthCheck?.path == "/health")
        #expect(orders.healthCheck?.interval == .seconds(2))
        #expect(orders.healthCheck?.timeout == .milliseconds(250))
        #expect(orders.healthCheck?.threshold == 5)
        #expect(tenant.apps[1].appChannel == AppChannelSpec(protocol: .http, address: .unix(path: "/run/web.sock")))
        #expect(tenant.apps[2].appChannel == nil)
        #expect(tenant.allowInvocationFrom == [InvocationGrant(namespace: "team-b", appIds: ["checkout"], methods: ["orders/"])])
    }

    @Test(
        "a bad app channel is refused naming its field",
        arguments: [
            ("appChannel: {protocol: soap}", "spec.apps[0].appChannel.protocol"),
            ("appChannel: {address: 127.0.0.1}", "spec.apps[0].appChannel.address"),
            ("appChannel: {address: 'h:70000'}", "spec.apps[0].appChannel.address"),
            ("appChannel: {address: 'unix://relative'}", "spec.apps[0].appChannel.address"),
            ("appChannel: {maxConcurrency: 0}", "spec.apps[0].appChannel.maxConcurrency"),
            ("appChannel: {healthCheck: {threshold: 0}}", "spec.apps[0].appChannel.healthCheck.threshold"),
            ("appChannel: {healthCheck: {path: health}}", "spec.apps[0].appChannel.healthCheck.path"),
            ("appChannel: {port: 1}", "spec.apps[0].appChannel"),
            ("appChannel: {appApiToken: a, appApiTokenFile: f}", "spec.apps[0].appChannel.appApiTokenFile"),
            ("appChannel: {appApiToken: ''}", "spec.apps[0].appChannel.appApiToken"),
            ("appChannel: {appApiTokenFile: missing.token}", "spec.apps[0].appChannel.appApiTokenFile"),
        ])
    func refusesBadAppChannels(line: String, field: String) throws {
        let error = #expect(throws: ConfigurationError.self) {
            try load("  apps:\n    - appId: orders\n      \(line)")
        }
        #expect(error?.field.hasPrefix(field) == true, "\(String(describing: error))")
    }

    @Test("an app channel's API token is read inline or from a file beside the Tenant, trimmed")
    func appApiToken() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("hangar-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try "  from-a-file\n".write(toFile: "\(path)/web.token", atomically: true, encoding: .utf8)
        try """
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: team-a
        spec:
          apps:
            - appId: orders
              appChannel: {appApiToken: inline-token}
            - appId: web
              appChannel: {protocol: http, appApiTokenFile: web.token}
        """.write(toFile: "\(path)/t.yaml", atomically: true, encoding: .utf8)
        let configuration = try NodeConfiguration.load(
            tenancyDirectory: path, resourcesDirectory: nil, registry: .node, logger: logger)
        let apps = try #require(configuration.tenants.first).apps
        #expect(apps[0].appChannel?.appApiToken == "inline-token")
        #expect(apps[1].appChannel?.appApiToken == "from-a-file")
    }

    @Test("a grant names a valid namespace")
    func refusesBadGrants() throws {
        let error = #expect(throws: ConfigurationError.self) {
            try load("  apps:\n    - appId: a\n  allowInvocationFrom:\n    - namespace: ../x")
        }
        #expect(error?.field == "spec.allowInvocationFrom[0].namespace")
    }

    @Test(
        "targets resolve in the caller's namespace, or in the one after a single dot",
        arguments: [
            ("orders", "team-a/orders"), ("orders.team-b", "team-b/orders"), ("a.b.c", "refused"), ("../x", "refused"),
            ("a||b", "refused"), ("orders.", "refused"), ("", "refused"),
        ])
    func targets(target: String, expected: String) {
        let caller = AppID(namespace: "team-a", appId: "caller")
        let resolved = (try? InvocationAPI.resolve(target, from: caller)).map(\.description) ?? "refused"
        #expect(resolved == expected)
    }

    @Test(
        "methods are cleaned as Dapr cleans them, and control characters, ? and # are refused",
        arguments: [
            ("orders/1", "orders/1"), ("/a/./b/../c/", "a/c"), ("../../x", "x"), ("a//b", "a/b"), ("", ""),
            ("a?b", "refused"), ("a#b", "refused"), ("a\u{0}b", "refused"), ("a\nb", "refused"),
        ])
    func methods(method: String, expected: String) {
        #expect(((try? InvocationAPI.normalise(method)) ?? "refused") == expected)
    }

    @Test("the callee gets the caller's headers without credentials, routing or hop-by-hop headers, plus Dapr's")
    func forwardedHeaders() {
        let forwarded = InvocationAPI.forwarded(
            [
                ("X-Custom", "1"), ("dapr-api-token", "secret"), ("dapr-app-id", "orders"), ("Connection", "x-hop"),
                ("x-hop", "gone"), ("content-length", "3"), (":path", "/x"), ("grpc-timeout", "1S"),
                ("traceparent", "00-abc"), ("dapr-caller-app-id", "forged"), ("Expect", "100-continue"),
            ],
            caller: AppID(namespace: "team-a", appId: "caller"), callee: AppID(namespace: "team-a", appId: "orders"))
        #expect(forwarded.filter { $0.name != "traceparent" }.map { "\($0.name)=\($0.value)" } == [
            "x-custom=1", "dapr-content-length=3", "dapr-caller-app-id=caller", "dapr-caller-namespace=team-a",
            "dapr-callee-app-id=orders",
        ])
        // "00-abc" is no valid traceparent: the callee gets a new trace.
        let trace = forwarded.first { $0.name == "traceparent" }?.value ?? ""
        #expect(trace.wholeMatch(of: /00-[0-9a-f]{32}-[0-9a-f]{16}-01/) != nil)
    }

    @Test("an HTTP caller's permanent headers reach a gRPC callee as dapr-<name>, and as they are an HTTP callee")
    func httpCallerHeaders() {
        let headers: [(name: String, value: String)] = [
            ("Content-Type", "text/plain"), ("Accept", "application/json"), ("Cookie", "a=1"), ("Host", "x"),
            ("User-Agent", "sdk"), ("X-Key-Bin", "AAEC"), ("Content-Length", "4"), ("Authorization", "Basic x"),
        ]
        let caller = AppID(namespace: "team-a", appId: "caller")
        let callee = AppID(namespace: "team-a", appId: "orders")
        let toGRPC = InvocationAPI.forwarded(headers, caller: caller, callee: callee, to: .grpc).prefix(6)
        #expect(toGRPC.map { "\($0.name)=\($0.value)" } == [
            "dapr-content-type=text/plain", "dapr-accept=application/json", "dapr-cookie=a=1", "user-agent=sdk",
            "x-key-bin=AAEC", "dapr-content-length=4",
        ])
        let toHTTP = InvocationAPI.forwarded(headers, caller: caller, callee: callee, to: .http).prefix(4)
        #expect(toHTTP.map { "\($0.name)=\($0.value)" } == [
            "accept=application/json", "cookie=a=1", "user-agent=sdk", "authorization=Basic x",
        ])
    }

    @Test("a gRPC caller's :authority and grpc-* metadata reach an HTTP callee as dapr-*, without -bin keys")
    func grpcCallerHeaders() {
        let headers: [(name: String, value: String)] = [
            (":method", "POST"), (":authority", "localhost:50001"), (":path", "/x"),
            ("content-type", "application/grpc"),
            ("te", "trailers"), ("grpc-timeout", "1S"), ("grpc-accept-encoding", "gzip"), ("x-id-bin", "AAE="),
            ("user-agent", "grpc-python"), ("x-custom", "1"),
        ]
        let caller = AppID(namespace: "team-a", appId: "caller")
        let callee = AppID(namespace: "team-a", appId: "web")
        let toHTTP = InvocationAPI.forwarded(headers, caller: caller, callee: callee, to: .http).prefix(4)
        #expect(toHTTP.map { "\($0.name)=\($0.value)" } == [
            "dapr-authority=localhost:50001", "dapr-grpc-accept-encoding=gzip", "user-agent=grpc-python", "x-custom=1",
        ])
        let toGRPC = InvocationAPI.forwarded(headers, caller: caller, callee: callee, to: .grpc).prefix(3)
        #expect(toGRPC.map { "\($0.name)=\($0.value)" } == ["x-id-bin=AAE=", "user-agent=grpc-python", "x-custom=1"])
    }

    @Test("an HTTP callee's status maps to Dapr's gRPC code, message and ErrorInfo")
    func httpStatusErrors() {
        let error = InvocationError.httpStatus(404, body: ByteBuffer(string: String(repeating: "x", count: 100)))
        #expect(error.rpcCode == .notFound)
        #expect(error.message == "Not Found" && error.reason == "Not Found" && error.errorCode.isEmpty)
        #expect(error.errorMetadata == ["http.code": "404", "http.error_message": String(repeating: "x", count: 63)])
        let codes: [(Int, RPCCode)] = [
            (400, .internal), (401, .unauthenticated), (403, .permissionDenied), (408, .cancelled),
            (409, .alreadyExists),
            (429, .resourceExhausted), (500, .unknown), (501, .unimplemented), (503, .unavailable),
            (504, .deadlineExceeded), (418, .unknown),
        ]
        for (status, code) in codes { #expect(InvocationError.httpStatus(status, body: ByteBuffer()).rpcCode == code) }
        #expect(InvocationError.httpStatus(418, body: ByteBuffer()).message == "I'm a teapot")
    }

    @Test("a caller's W3C trace continues with a new span; none or an invalid one starts a new trace")
    func traceContext() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        let continued = InvocationAPI.traceparent(continuing: incoming)
        #expect(continued.continued)
        #expect(continued.value.hasPrefix("00-4bf92f3577b34da6a3ce929d0e0e4736-"))
        #expect(continued.value.hasSuffix("-01"))
        #expect(!continued.value.contains("00f067aa0ba902b7"))
        for bad in [nil, "", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "zz-x-y-z"] {
            let fresh = InvocationAPI.traceparent(continuing: bad)
            #expect(!fresh.continued)
            #expect(fresh.value.wholeMatch(of: /00-[0-9a-f]{32}-[0-9a-f]{16}-01/) != nil)
        }
    }

    @Test("a grant matches its namespace, its apps and its method prefixes")
    func grants() {
        let grant = InvocationGrant(namespace: "team-b", appIds: ["checkout"], methods: ["orders/"])
        #expect(grant.allows(AppID(namespace: "team-b", appId: "checkout"), method: "orders/1"))
        #expect(!grant.allows(AppID(namespace: "team-b", appId: "checkout"), method: "payments/1"))
        #expect(!grant.allows(AppID(namespace: "team-b", appId: "cart"), method: "orders/1"))
        #expect(!grant.allows(AppID(namespace: "team-c", appId: "checkout"), method: "orders/1"))
        #expect(InvocationGrant(namespace: "team-b").allows(AppID(namespace: "team-b", appId: "any"), method: "x"))
    }
}
