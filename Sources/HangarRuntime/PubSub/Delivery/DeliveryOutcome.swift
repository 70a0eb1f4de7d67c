/// How one delivery ends, whoever answered it (a streaming subscriber's `event_processed`, a pushed event's reply,
/// or the runtime itself when the message cannot be delivered): what the delivery loop then does with the message.
package enum DeliveryOutcome: Sendable, Hashable {
    /// Processed: acknowledged.
    case success
    /// Redelivered after the wait the loop's `DeliveryPolicy` gives; a message out of retries goes to the
    /// dead-letter topic when one is set, else is dropped (logged and counted). The text says why.
    case retry(String)
    /// A failure that carries a status (an HTTP app's answer other than 2xx and 404, a gRPC app's error status):
    /// retried as `retry` when the retry policy's `matching` lists the code, else dead-lettered or dropped at once.
    case failed(String, code: DeliveryFailureCode)
    /// Not to be processed (DROP, HTTP 404, no matching route): published to the dead-letter topic when one is set,
    /// else acknowledged and dropped (logged and counted).
    case drop(String)
    /// Dropped without the dead-letter topic: a gRPC app that answers UNIMPLEMENTED has no handler for it (Dapr
    /// drops with a warning and never dead-letters it).
    case discard(String)
    /// Cannot be delivered as it is (a stored message that is not a readable CloudEvent, a routing rule that fails
    /// on it): to the dead-letter topic at once when one is set, else retried, as Dapr does.
    case undeliverable(String)
}
