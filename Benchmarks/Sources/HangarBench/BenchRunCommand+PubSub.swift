import Foundation
import NIOCore

/// The pub/sub scenarios of `run` (issue 14): the closed-loop PublishEvent loads (`publish-memory`,
/// `publish-sqlite`) measured like GetState, and the `pubsub` scenario's delivery phases (`PubSubScenario`).
extension BenchRunCommand {
    /// The component each publish scenario publishes to.
    static let publishComponents: [(scenario: BenchScenario, component: String)] = [
        (.publishMemory, PubSubScenario.memoryComponent), (.publishSQLite, PubSubScenario.sqliteComponent),
    ]
    /// The topic every closed-loop publisher publishes to: one hot topic per component, no subscriber (the
    /// publishes are acknowledged once the component has them, written to its log for pubsub.sqlite).
    static let publishTopic = "load"

    /// PublishEvent of `--value-bytes` of data on each selected component, one request shared by every caller;
    /// one publish through the first connection checks each first.
    func publishLoads(on server: BenchServer, selected: Set<BenchScenario>) async throws -> [LoadGenerator.Load] {
        var loads: [LoadGenerator.Load] = []
        for (scenario, component) in Self.publishComponents where selected.contains(scenario) {
            let (message, _) = try BenchRequests.publishEvent(
                pubsub: component, topic: Self.publishTopic, dataBytes: pubsubDataBytes)
            let request = GRPCClientRequest(path: BenchRequests.publishEventPath, message: message)
            _ = try await server.connections(callers: 1).grpc[0].call(request).get()
            loads.append(
                LoadGenerator.Load(
                    operation: "PublishEvent", store: component,
                    requests: .grpc(Array(repeating: [request], count: concurrency))))
        }
        return loads
    }

    /// The data of every published event: at least room for the stamp and a space (`BenchRequests.eventData`).
    var pubsubDataBytes: Int { max(valueBytes, BenchRequests.stampDigits + 1) }

    /// Declares the `pubsub` scenario's second tenant (`noisy`) in the fixture, before hangard starts.
    func addNoisyTenant(to fixture: BenchFixture) throws {
        let tenant = PubSubScenario.noisyTenant
        try tenant.yaml.write(toFile: fixture.tenancy + "/\(tenant.namespace).yaml", atomically: true, encoding: .utf8)
    }

    /// The `pubsub` scenario on the running hangard (see `PubSubScenario.prepare`).
    func preparePubSub(
        servers: [BenchServer], fixture: BenchFixture, group: any EventLoopGroup, push: PushReceiver,
        budget: PatienceBudget
    ) async throws -> PubSubScenario {
        guard let daemon = servers.first(where: { $0.generator.serverName == "hangard" }) else {
            throw BenchError("the pubsub scenario needs hangard")
        }
        return try await PubSubScenario.prepare(
            fixture: fixture, publisherGroup: group, push: push, hangardPID: daemon.process.pid,
            publisherCount: min(pubsubPublishers, apps - 1), dataBytes: pubsubDataBytes, lowRate: pubsubLowRate,
            floodRate: pubsubFloodRate, fixedRate: pubsubRate, warmup: warmup,
            duration: duration ?? pubsubDuration, patience: budget)
    }

    /// What pubsub.sqlite sustained with the concurrent closed-loop publishers in `round`, if that phase ran.
    static func sqlitePublishRate(_ phases: [PhaseResult], round: Int) -> Double? {
        phases.first {
            $0.round == round && $0.operation == "PublishEvent" && $0.store == PubSubScenario.sqliteComponent
                && $0.mode == "concurrent"
        }?.callsPerSecond
    }
}
