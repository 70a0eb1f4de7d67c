import NIOCore
import Testing

@testable import HangarGRPC

/// The `grpc-timeout` the app channel sends: gRPC allows at most 8 digits, so long deadlines change unit.
@Suite("grpc-timeout to apps")
struct GRPCTimeoutHeaderTests {
    @Test("milliseconds while they fit in 8 digits, then seconds, minutes, hours; never 0, never more than 8 digits")
    func units() {
        #expect(GRPCClientConnectionHandler.grpcTimeout(.nanoseconds(1)) == "1m")
        #expect(GRPCClientConnectionHandler.grpcTimeout(.milliseconds(500)) == "500m")
        #expect(GRPCClientConnectionHandler.grpcTimeout(.milliseconds(99_999_999)) == "99999999m")
        #expect(GRPCClientConnectionHandler.grpcTimeout(.milliseconds(100_000_000)) == "100000S")
        #expect(GRPCClientConnectionHandler.grpcTimeout(.hours(24 * 365 * 100)) == "52560000M")
        #expect(GRPCClientConnectionHandler.grpcTimeout(.nanoseconds(.max)) == "2562048H")
        for amount in [TimeAmount.seconds(1), .hours(30), .nanoseconds(.max)] {
            let value = GRPCClientConnectionHandler.grpcTimeout(amount)
            #expect(value.dropLast().count <= 8)
        }
    }
}
