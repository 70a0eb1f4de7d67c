/// One measured phase of the `pubsub` scenario: events published at a paced rate through hangard and delivered to
/// a subscriber that answers at once (streaming or pushed to), on one component, optionally while another tenant
/// floods a subscriber that never answers (`PubSubScenario`).
struct PubSubPhaseResult: Codable, Sendable {
    /// What a phase measures.
    enum Kind: String, Codable, Sendable {
        /// Publish → delivery at half the rate the component (pubsub.sqlite) sustained with 32 closed-loop
        /// publishers in the same round.
        case halfRate = "half-rate"
        /// Publish → delivery at `--pubsub-low-rate` (the noisy neighbour's "alone" phase on pubsub.sqlite).
        case lowRate = "low-rate"
        /// The low-rate phase while tenant `noisy` publishes `--pubsub-flood-rate` events/s to a subscriber of its
        /// own that never answers, on the same component.
        case lowRateFlooded = "low-rate-flooded"
    }

    var kind: Kind
    /// The component (`mempubsub`: pubsub.in-memory, `sqlpubsub`: pubsub.sqlite).
    var component: String
    /// How the subscriber gets its events (`PubSubDelivery`).
    var delivery: PubSubDelivery
    var round = 1
    var seconds: Double
    /// The publishes of the measured window (issued, OK, refused, failed, their call latency).
    var publish: PacedTraffic
    /// Events of the window that reached the subscriber, and those that had not arrived `deliveryTimeout` after
    /// the window (publishes that were answered OK but not delivered by then).
    var delivered: Int
    var undelivered: Int
    /// Arrivals beyond one per publish (at-least-once redeliveries, or warm-up publishes sent late), counted.
    var duplicates: Int
    /// Publish call start → arrival at the subscriber, µs.
    var deliveryLatency: LatencySummary
    /// hangard's CPU over the window ÷ events published OK in it (the flood's included), µs; and in cores.
    var hangardCPUMicrosPerMessage: Double
    var hangardCores: Double
    /// Cores busy with anything but hangard and the bench during the window.
    var otherBusyCores: Double?
    /// The flood (kind `low-rate-flooded`): its publishes in the window, and how many events its subscriber got.
    var flood: PacedTraffic?
    var floodReceived: Int?

    var label: String { "\(component) \(kind.rawValue)" }
}

/// How the `pubsub` scenario's subscriber receives events. (Push over HTTP, hangard POSTing the CloudEvent to an
/// app's route, is not measured: it would need an HTTP app server in the bench.)
enum PubSubDelivery: String, Codable, Sendable {
    /// `SubscribeTopicEventsAlpha1` from the bench's own gRPC client (`GRPCSubscriber`).
    case streaming
    /// Pushed by hangard: `AppCallback/OnTopicEvent` on a gRPC app the bench serves (`PushReceiver`), subscribed by
    /// a declarative `Subscription`.
    case push
}
