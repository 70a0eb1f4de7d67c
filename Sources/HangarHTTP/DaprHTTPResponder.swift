import HangarComponents
import HangarRuntime
import NIOCore
import NIOHTTP1

/// Dapr's HTTP API (`/v1.0/...`) for one listener: finds a request's route in `DaprHTTPAPI.router`, admits it and
/// runs it. Dapr semantics live in the runtime's building blocks, shared with the gRPC front-end; the routes
/// (`DaprHTTPAPI+<Block>.swift`) translate JSON and HTTP to and from them.
///
/// The gate admits a request at its head (who is calling, quotas, the largest body it may send), before the body
/// is read; the admission's slot is held until the response is built. Calls to non-blocking components complete
/// within the read that brought the request's end.
struct DaprHTTPResponder: HTTPResponder {
    struct Call: Sendable {
        let match: HTTPRouter<DaprHTTPHandler>.Match
        let target: RequestTarget
        let admission: Admission
    }

    let runtime: Runtime
    let listener: ListenerIdentity

    func start(_ head: HTTPRequestHead, on channel: any Channel) -> HTTPStart<Call> {
        let target = RequestTarget(head.uri)
        guard
            let match = DaprHTTPAPI.router.match(head.method, path: target.path)
                ?? DaprHTTPAPI.invokeByHeader(head, path: target.path)
        else {
            return .respond(DaprHTTPError.response(DaprHTTPError.notFound(head.method, target.path)))
        }
        if case .atHead(let answer) = match.route.handler {
            return .respond(
                answer(DaprHTTPHead(runtime: runtime, head: head, target: target, parameters: match.parameters)))
        }
        do {
            // The first token value, as Dapr reads it (and as the gRPC front-end does).
            let admission = try runtime.gate.admit(
                listener, token: head.headers.first(name: "dapr-api-token"), connection: channel)
            let call = Call(match: match, target: target, admission: admission)
            if case .stream = match.route.handler { return .stream(call, limit: admission.maxRequestBytes) }
            return .readBody(call, limit: admission.maxRequestBytes)
        } catch {
            return .respond(DaprHTTPError.response(error))
        }
    }

    func respond(to call: Call, head: HTTPRequestHead, body: ByteBuffer, on channel: any Channel)
        -> Eventual<HTTPResponse>
    {
        let outcome: Eventual<HTTPResponse>
        do {
            guard case .call(let run) = call.match.route.handler else {
                throw RequestError.internal("route \(call.match.route.pattern) is answered at its head")
            }
            outcome = try run(
                DaprHTTPRequest(
                    runtime: runtime, caller: call.admission.caller, head: head, target: call.target,
                    parameters: call.match.parameters, body: body, eventLoop: channel.eventLoop))
        } catch {
            outcome = .failure(error)
        }
        switch outcome {
        case .ready(let result):
            return .success(finish(call, result))
        case .later(let future):
            return .later(future.map { self.finish(call, .success($0)) }.recover { self.finish(call, .failure($0)) })
        }
    }

    func tooLarge(_ call: Call, declaredLength: Int?) -> HTTPResponse {
        finish(call, .failure(call.admission.tooLarge(declaredLength)))
    }

    func abandon(_ call: Call) {
        call.admission.finish()
    }

    func buffers(_ call: Call) -> BufferAccount? { call.admission.buffers }

    func refused(_ call: Call, _ refusal: BufferAccount.Refusal) -> HTTPResponse {
        finish(call, .failure(call.admission.buffers.error(refusal, app: call.admission.caller.app)))
    }

    /// Runs a streamed route. The admission's slot is held until the route settles the call (its response has
    /// ended or failed), or until the caller goes away or sends a body over its `maxRequestBytes` (answered 413 when
    /// no response has started yet); the route's own cancellation handlers then abandon its work.
    func stream(_ call: Call, exchange: HTTPExchange) {
        guard case .stream(let run) = call.match.route.handler else {
            exchange.respond(
                finish(call, .failure(RequestError.internal("route \(call.match.route.pattern) is not streamed"))))
            return
        }
        let stream = DaprHTTPStream(
            runtime: runtime, caller: call.admission.caller, target: call.target, parameters: call.match.parameters,
            exchange: exchange
        ) { result in
            self.finish(call, exchange, result)
        }
        exchange.whenCancelled { reason in
            switch reason {
            case .tooLarge: stream.finish(.failure(call.admission.tooLarge(nil)))
            case .closed: stream.finish(.failure(reason))
            }
        }
        run(stream)
    }

    /// Returns the admission's slot, counts the call in the metrics under its route's name (the Dapr gRPC method's),
    /// and turns a failure into Dapr's error body.
    private func finish(_ call: Call, _ result: Result<HTTPResponse, any Error>) -> HTTPResponse {
        call.admission.finish()
        let code: RPCCode
        let response: HTTPResponse
        switch result {
        case .success(let value):
            (code, response) = (.ok, value)
        case .failure(let error as any DaprAPIError):
            (code, response) = (error.rpcCode, DaprHTTPError.response(error))
        case .failure(let error):
            (code, response) = (.internal, DaprHTTPError.response(error))
        }
        call.admission.record(method: call.match.route.name, transport: "http", code: code)
        return response
    }

    /// `finish` for a streamed call: a success ends its response; a failure is answered as Dapr's error if no
    /// response has started, else the response is cut short (the connection closes).
    private func finish(_ call: Call, _ exchange: HTTPExchange, _ result: Result<Void, any Error>) {
        call.admission.finish()  // before the response ends, which lets a pipelined request in
        let code: RPCCode
        switch result {
        case .success where exchange.hasStartedResponse:
            code = .ok
            exchange.end()
        case .success:
            code = .internal
            exchange.respond(DaprHTTPError.response(RequestError.internal("the route ended without a response")))
        case .failure(is HTTPExchange.Cancellation):
            code = .cancelled  // the caller went away: nothing more can be written
            exchange.abort()
        case .failure(let error):
            code = (error as? any DaprAPIError)?.rpcCode ?? .internal
            if exchange.hasStartedResponse { exchange.abort() } else { exchange.respond(DaprHTTPError.response(error)) }
        }
        call.admission.record(method: call.match.route.name, transport: "http", code: code)
    }
}
