import Logging
import Testing

@testable import HangarSystemd

@Suite struct JournalLogHandlerTests {
    @Test func levelsBecomeSyslogPriorities() {
        let expected: [Logger.Level: Int] = [
            .trace: 7, .debug: 7, .info: 6, .notice: 5, .warning: 4, .error: 3, .critical: 2,
        ]
        for (level, priority) in expected {
            #expect(JournalLogHandler.fields(level: level, message: "m", metadata: [:], label: "l")
                .contains("PRIORITY=\(priority)"))
        }
    }

    @Test func identityMetadataGetsShortFieldNamesAndTheRestIsUpperCased() {
        let fields = JournalLogHandler.fields(
            level: .error, message: "cannot bind",
            metadata: [
                "tenant.namespace": "team-a", "app.id": "orders", "component.name": "statestore",
                "config.path": "/etc/hangar/a.yaml", "retry-in": "1 s",
            ],
            label: "hangard")
        #expect(fields.contains("TENANT=team-a"))
        #expect(fields.contains("APP=orders"))
        #expect(fields.contains("COMPONENT=statestore"))
        #expect(fields.contains("CONFIG_PATH=/etc/hangar/a.yaml"))
        #expect(fields.contains("RETRY_IN=1 s"))
        #expect(fields.contains("SYSLOG_IDENTIFIER=hangard"))
        // The one-line view still shows the context.
        let message = fields.first { $0.hasPrefix("MESSAGE=") }
        #expect(message?.contains("cannot bind") == true)
        #expect(message?.contains("tenant.namespace=team-a") == true)
    }

    @Test func keysThatCannotBeFieldNamesAreLeftOutOrFixed() {
        #expect(JournalLogHandler.fieldName("_private") == "PRIVATE")
        #expect(JournalLogHandler.fieldName("9lives") == nil)
        #expect(JournalLogHandler.fieldName(String(repeating: "a", count: 100))?.count == 64)
        // Metadata may not override the entry's own fields.
        let fields = JournalLogHandler.fields(level: .info, message: "m", metadata: ["priority": "0"], label: "l")
        #expect(fields.filter { $0.hasPrefix("PRIORITY=") } == ["PRIORITY=6"])
    }
}
