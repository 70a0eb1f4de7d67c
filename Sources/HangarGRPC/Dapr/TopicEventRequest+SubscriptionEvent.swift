import HangarRuntime
import SwiftProtobuf

extension Dapr_Proto_Runtime_V1_TopicEventRequest {
    /// Dapr's `TopicEventRequest` for an event, as both the streaming subscription and push delivery send it. Fails
    /// only when an extension holds a number past a double's range (Dapr's decoder refuses such an event).
    init(_ event: SubscriptionEvent) throws(GoJSON.NumberOutOfRange) {
        self.init()
        id = event.id
        source = event.source
        type = event.type
        specVersion = event.specVersion
        dataContentType = event.dataContentType
        data = event.data
        topic = event.topic
        pubsubName = event.pubsubName
        path = event.path
        extensions = try Google_Protobuf_Struct(goJSON: event.extensions)
    }
}

/// A decoded JSON object as a `Struct`, built directly rather than through JSON text and SwiftProtobuf's JSON
/// parser: what Dapr's `protojson.Unmarshal(json.Marshal(extensions))` gives, numbers as doubles.
extension Google_Protobuf_Struct {
    init(goJSON object: [String: GoJSON]) throws(GoJSON.NumberOutOfRange) {
        self.init()
        fields.reserveCapacity(object.count)
        for (key, value) in object { fields[key] = try Google_Protobuf_Value(goJSON: value) }
    }
}

extension Google_Protobuf_Value {
    init(goJSON value: GoJSON) throws(GoJSON.NumberOutOfRange) {
        self.init()
        switch value {
        case .null: nullValue = .nullValue
        case .bool(let bool): boolValue = bool
        case .string(let string): stringValue = string
        case .number(let literal):
            guard let double = GoJSON.float64(literal) else { throw GoJSON.NumberOutOfRange(literal: literal) }
            numberValue = double
        case .array(let items):
            var list = Google_Protobuf_ListValue()
            list.values.reserveCapacity(items.count)
            for item in items { list.values.append(try Google_Protobuf_Value(goJSON: item)) }
            listValue = list
        case .object(let members):
            structValue = try Google_Protobuf_Struct(goJSON: members)
        }
    }
}
