package import HangarComponents
package import NIOCore

/// Service invocation, shared by both front-ends: resolves the target app, applies the tenancy rules (same
/// namespace allowed; another namespace only when its Tenant grants it), and calls the target over its app channel
/// with Dapr's headers. The caller's quotas were applied by the gate; the target's `maxConcurrency` is applied here.
package struct InvocationAPI: Sendable {
    let registry: TenantRegistry
    let channels: AppChannels
    let metrics: RuntimeMetrics
    /// How long a call into an app may take when the caller set no deadline.
    let defaultTimeout: TimeAmount

    init(registry: TenantRegistry, channels: AppChannels, metrics: RuntimeMetrics, defaultTimeout: TimeAmount) {
        self.registry = registry
        self.channels = channels
        self.metrics = metrics
        self.defaultTimeout = defaultTimeout
    }

    /// Calls `invocation.method` on `target` (`appId`, or `appId.namespace`). `headers` are the caller's request
    /// headers or metadata; the callee receives them filtered as Dapr filters them, plus `dapr-caller-app-id`,
    /// `dapr-caller-namespace` and `dapr-callee-app-id`.
    package func invoke(
        _ caller: Caller, target: String, _ invocation: AppInvocation, headers: [(name: String, value: String)],
        deadline: NIODeadline? = nil, on eventLoop: any EventLoop
    ) -> Eventual<AppInvocationResult> {
        call(caller, target: target, invocation, headers: headers, deadline: deadline, on: eventLoop) {
            request, entry, deadline in
            entry.channel.invoke(request, deadline: deadline, on: eventLoop)
        }
    }

    /// What every invocation does around its call into the app: normalises the method, routes it (`route`'s rules),
    /// forwards the caller's headers as the callee's protocol receives them, applies the default deadline, and runs
    /// `make` in a slot of the target's `maxConcurrency`, counted by `finish`.
    func call<Value: Sendable>(
        _ caller: Caller, target: String, _ invocation: AppInvocation, headers: [(name: String, value: String)],
        deadline: NIODeadline?, on eventLoop: any EventLoop,
        _ make: @escaping @Sendable (AppInvocation, AppChannels.Entry, NIODeadline) -> EventLoopFuture<Value>
    ) -> Eventual<Value> {
        var invocation = invocation
        let route: Route
        do {
            invocation.method = try Self.normalise(invocation.method)
            route = try self.route(caller, to: target, method: invocation.method, verb: invocation.verb)
        } catch {
            return .failure(error)
        }
        invocation.metadata = Self.forwarded(
            headers, caller: caller.app, callee: route.callee, to: route.entry.spec.protocol)
        let request = invocation
        let deadline = deadline ?? .now() + defaultTimeout
        let entry = route.entry
        return finish(route, caller: caller) {
            entry.acquire(on: eventLoop).flatMap {
                make(request, entry, deadline).always { _ in entry.release() }
            }
        }
    }

    /// gRPC proxying: a call to `path` (`/package.Service/Method`), which hangard does not serve, made with
    /// `dapr-app-id: <target>`, goes to the target app's own gRPC server as a stream, its messages undecoded, its
    /// answer relayed to `observer` as it comes. Every shape of call is such a stream (the path does not say
    /// whether a method is unary). The same target and tenancy rules apply as to `invoke` (the method is the full
    /// path without its leading slash), and a refusal is thrown before anything reaches the app; the call then
    /// holds a slot of the target's `maxConcurrency` until it ends. The callee gets the caller's metadata without
    /// `dapr-app-id` and the token, plus Dapr's caller headers, and the caller's deadline when it set one (a
    /// stream may be long-lived, so no default deadline applies).
    package func proxy(
        _ caller: Caller, path: String, headers: [(name: String, value: String)], deadline: NIODeadline?,
        on eventLoop: any EventLoop, observer: any AppStreamObserver
    ) throws(APIError) -> any AppStream {
        let target = headers.first { $0.name.lowercased() == "dapr-app-id" }?.value ?? ""
        let route = try self.route(caller, to: target, method: String(path.drop { $0 == "/" }), proxied: true)
        let stream = InvocationStream(route: route, caller: caller, metrics: metrics, observer: observer)
        stream.open(
            path: path, metadata: Self.forwarded(headers, caller: caller.app, callee: route.callee), deadline: deadline,
            on: eventLoop)
        return stream
    }

    /// Where a call goes: the target app and its channel.
    struct Route {
        let callee: AppID
        let entry: AppChannels.Entry
    }

    /// The rules of every call into an app, in order: the target resolves and is declared, a call from another
    /// namespace is granted by the target's Tenant, the access control of the target's Configuration allows it (as
    /// Dapr applies it on the callee's side; self-calls skip it), the target has an app channel and is healthy.
    /// Refusals of a declared target count in its metrics like calls that reached it.
    ///
    /// `verb` is the HTTP verb of an invocation (nil when it has none); `proxied` says that `method` is a proxied
    /// gRPC method's path, which the access control matches with verb `NONE` and its case kept, as Dapr does.
    func route(_ caller: Caller, to target: String, method: String, verb: String? = nil, proxied: Bool = false)
        throws(APIError) -> Route
    {
        let callee = try Self.resolve(target, from: caller.app)
        guard let found = registry.invocationTarget(callee, caller: caller.app) else {
            throw InvocationError.notFound(callee)
        }
        let refuse = { [metrics] (refusal: APIError) -> APIError in
            metrics.recordInvocation(caller: caller.app, target: callee, code: refusal.rpcCode, duration: .zero)
            return refusal
        }
        if callee.namespace != caller.namespace,
            !found.grants.contains(where: { $0.allows(caller.app, method: method) })
        {
            throw refuse(InvocationError.denied(caller: caller.app, target: callee, method: method))
        }
        switch found.access {
        case .unrestricted:
            break
        case .list(let list, _) where callee != caller.app:
            let operation = proxied ? "/" + method : method
            let verbName = (proxied || !list.isHTTP) ? "NONE" : Self.verbName(verb)
            if !list.allows(caller.app, trustDomain: found.callerTrustDomain, operation: operation, verb: verbName) {
                throw refuse(
                    InvocationError.accessDenied(
                        target: callee, proxied: proxied,
                        caller: AccessControlList.spiffeID(caller.app, trustDomain: found.callerTrustDomain),
                        operation: operation, verb: verbName))
            }
        case .unusable(let why) where callee != caller.app:
            throw refuse(InvocationError.accessUnusable(callee, why))
        case .list, .unusable:
            break  // a self-call: Dapr skips the access control
        }
        guard let entry = channels.entry(callee) else { throw refuse(InvocationError.noChannel(callee)) }
        guard entry.isHealthy else { throw refuse(InvocationError.unhealthy(callee)) }
        return Route(callee: callee, entry: entry)
    }

    /// Runs a call into the app: its channel's failures become Dapr's errors (the callee's own status is kept), and
    /// the call is counted in the metrics with its duration.
    func finish<Value: Sendable>(
        _ route: Route, caller: Caller, _ call: () -> EventLoopFuture<Value>
    ) -> Eventual<Value> {
        let started = NIODeadline.now()
        let callee = route.callee
        let future = call().flatMapErrorThrowing { error -> Value in
            switch error {
            case AppChannelError.status(let code, let message): throw AppCalleeError(code: code, message: message)
            case let failure as AppChannelError: throw InvocationError.failed(callee, failure)
            default: throw error
            }
        }
        future.whenComplete { [metrics] result in
            let code: RPCCode =
                switch result {
                case .success: .ok
                case .failure(let error as any DaprAPIError): error.rpcCode
                case .failure: .internal
                }
            metrics.recordInvocation(
                caller: caller.app, target: callee, code: code,
                duration: .nanoseconds((NIODeadline.now() - started).nanoseconds))
        }
        return .later(future)
    }

    /// The name Dapr gives an HTTP verb in an access-control decision: its `HTTPExtension.Verb` name, `NONE` for
    /// none or one the enum does not know.
    static func verbName(_ verb: String?) -> String {
        guard let verb else { return "NONE" }
        switch verb.uppercased() {
        case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH": return verb.uppercased()
        default: return "NONE"
        }
    }

    /// `appId` in the caller's namespace, or `appId.namespace`; more than one dot is refused, as in Dapr.
    static func resolve(_ target: String, from caller: AppID) throws(APIError) -> AppID {
        let parts = target.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { throw InvocationError.invalidTarget(target, "more than one '.'") }
        let appId = String(parts[0])
        let namespace = parts.count == 2 ? String(parts[1]) : caller.namespace
        if let problem = Names.dns1123Problem(appId) { throw InvocationError.invalidTarget(target, problem) }
        if let problem = Names.dns1123Problem(namespace) { throw InvocationError.invalidTarget(target, problem) }
        return AppID(namespace: namespace, appId: appId)
    }

    /// Dapr's method normalisation: no `#`, `?`, NUL or control character; then `path.Clean` without a leading
    /// slash, with leading `../` dropped (`a/./b/../c` is `a/c`; `../../x` is `x`).
    static func normalise(_ method: String) throws(APIError) -> String {
        if method.unicodeScalars.contains(where: { $0 == "#" || $0 == "?" || $0.value < 0x20 || $0.value == 0x7F }) {
            throw InvocationError.invalidMethod(method)
        }
        var segments: [Substring] = []
        for segment in method.split(separator: "/", omittingEmptySubsequences: true) {
            switch segment {
            case ".": continue
            case "..": _ = segments.popLast()
            default: segments.append(segment)
            }
        }
        return segments.joined(separator: "/")
    }

    /// Headers Dapr never forwards to the callee: the caller's credentials and routing, hop-by-hop headers, and
    /// what the transport to the callee sets itself (`expect: 100-continue` is answered by hangard to the caller).
    static let dropped: Set<String> = [
        "dapr-api-token", "dapr-app-id", "destination-app-id", "connection", "keep-alive", "proxy-connection",
        "transfer-encoding", "upgrade", "http2-settings", "te", "trailer", "proxy-authorization",
        "proxy-authenticate", "host", "dapr-caller-app-id", "dapr-caller-namespace", "dapr-callee-app-id",
        "expect",
    ]

    /// IANA's permanent request headers that Dapr renames `dapr-<name>` when an HTTP caller's headers become a gRPC
    /// callee's metadata (`isPermanentHTTPHeader` in Dapr's `pkg/messaging/v1/util.go`; the hop-by-hop ones and
    /// `host` never get that far).
    package static let permanentHTTPHeaders: Set<String> = [
        "accept", "accept-charset", "accept-language", "accept-ranges", "cache-control", "content-type",
        "content-length", "cookie", "date", "expect", "from", "if-match", "if-modified-since", "if-none-match",
        "if-schedule-tag-match", "if-unmodified-since", "max-forwards", "origin", "pragma", "referer", "via",
        "warning",
    ]

    /// The `grpc-*` headers a gRPC server keeps to itself (grpc-go does not put them in the call's metadata), so
    /// an HTTP callee never sees them; the others reach it as `dapr-grpc-*`.
    static let reservedGRPCHeaders: Set<String> = [
        "grpc-timeout", "grpc-encoding", "grpc-message", "grpc-message-type", "grpc-status",
        "grpc-status-details-bin",
    ]

    /// The caller's headers as the callee receives them, mapped as Dapr maps them between the caller's protocol
    /// (a gRPC caller's headers carry `content-type: application/grpc`, which is how Dapr tells them apart) and
    /// the callee's:
    /// - HTTP caller → gRPC callee: permanent HTTP headers become `dapr-<name>` (`dapr-content-type`,
    ///   `dapr-accept`, ...);
    /// - gRPC caller → HTTP callee: `:authority` becomes `dapr-authority`, `grpc-*` become `dapr-grpc-*`;
    /// - to an HTTP callee, keys ending in `-bin`, `content-type` and `content-length` are left out (the call
    ///   carries its own).
    static func forwarded(
        _ headers: [(name: String, value: String)], caller: AppID, callee: AppID,
        to calleeProtocol: AppChannelSpec.ChannelProtocol = .grpc
    ) -> [(name: String, value: String)] {
        var dropped = Self.dropped
        var fromGRPC = false
        for (name, value) in headers {
            let count = name.utf8.count
            if count == 10, name.lowercased() == "connection" {
                for listed in value.split(separator: ",") {
                    dropped.insert(listed.trimmingCharacters(in: .whitespaces).lowercased())
                }
            } else if count == 12, value.hasPrefix("application/grpc"), name.lowercased() == "content-type" {
                fromGRPC = true
            }
        }
        let toHTTP = calleeProtocol == .http
        var forwarded: [(name: String, value: String)] = []
        var incomingTrace: String?
        for (name, value) in headers {
            let lower = name.lowercased()
            if dropped.contains(lower) { continue }
            if lower == "traceparent" {
                incomingTrace = value
                continue
            }
            if lower.hasPrefix(":") {
                if toHTTP && fromGRPC && lower == ":authority" { forwarded.append(("dapr-authority", value)) }
                continue
            }
            if toHTTP {
                if lower.hasSuffix("-bin") || lower == "content-type" || lower == "content-length" { continue }
                if lower.hasPrefix("grpc-") {
                    if fromGRPC && !reservedGRPCHeaders.contains(lower) { forwarded.append(("dapr-" + lower, value)) }
                    continue
                }
            } else {
                // The transport to a gRPC callee sets its own content type, deadline and encodings.
                if lower.hasPrefix("grpc-") { continue }
                if fromGRPC && lower == "content-type" { continue }
                if !fromGRPC && permanentHTTPHeaders.contains(lower) {
                    forwarded.append(("dapr-" + lower, value))
                    continue
                }
            }
            forwarded.append((lower, value))
        }
        let trace = traceparent(continuing: incomingTrace)
        if !trace.continued { forwarded.removeAll { $0.name == "tracestate" } }
        forwarded.append(("traceparent", trace.value))
        forwarded.append(("dapr-caller-app-id", caller.appId))
        forwarded.append(("dapr-caller-namespace", caller.namespace))
        forwarded.append(("dapr-callee-app-id", callee.appId))
        return forwarded
    }

    /// The W3C `traceparent` the callee receives: the caller's trace with a new span id (this hop), or a new trace
    /// when the caller sent none or an invalid one (its `tracestate` is then dropped too).
    static func traceparent(continuing incoming: String?) -> (value: String, continued: Bool) {
        traceparent(continuing: incoming) { UInt64.random(in: .min ... .max) }
    }

    /// `traceparent(continuing:)` with the random ids drawn by `draw` (publishes draw from a buffered pool,
    /// `PublishRandom`). A closure, not an `inout` generator: a generator without stored properties (the system's,
    /// or the pool's) passed `inout` crashes ThreadSanitizer builds (swiftlang/swift#66099, found by
    /// scripts/tsan.sh).
    static func traceparent(
        continuing incoming: String?, draw: () -> UInt64
    ) -> (value: String, continued: Bool) {
        if let incoming {
            let parts = incoming.split(separator: "-", omittingEmptySubsequences: false)
            let isHex = { (part: Substring, length: Int) in
                part.utf8.count == length && part.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
            }
            if parts.count >= 4, isHex(parts[0], 2), parts[0] != "ff", isHex(parts[1], 32), isHex(parts[2], 16),
                isHex(parts[3], 2), parts[1].contains(where: { $0 != "0" })
            {
                return ("00-\(parts[1])-\(hex(draw()))-\(parts[3])", true)
            }
        }
        // Three draws (for an invocation, one system call each) rather than one per byte: this runs on
        // every invocation. The trace id must not be all zeros: its low half is never 0 (one value in 2^64 is moved).
        let high = hex(draw())
        let low = hex(max(draw(), 1))
        return ("00-\(high)\(low)-\(hex(draw()))-01", false)
    }

    /// 16 lowercase hex digits.
    private static func hex(_ value: UInt64) -> String {
        String(unsafeUninitializedCapacity: 16) { buffer in
            let digits: StaticString = "0123456789abcdef"
            digits.withUTF8Buffer { digits in
                for index in 0..<16 { buffer[index] = digits[Int((value >> UInt64(60 - 4 * index)) & 0xF)] }
            }
            return 16
        }
    }
}
