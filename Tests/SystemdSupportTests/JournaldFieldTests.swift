import Logging
@testable import SystemdSupport
import Testing

@Suite("journald fields")
struct JournaldFieldTests {
    @Test("metadata keys become valid journald field names", arguments: [
        ("request_id", "REQUEST_ID"), ("duration-us", "DURATION_US"), ("_private", "PRIVATE"),
        ("räksmörgås", "R_KSM_RG_S"), ("1st", "F1ST"), ("message_id", "MESSAGE_ID"), ("___", ""),
    ])
    func fieldNames(key: String, field: String) {
        #expect(JournaldLogHandler.fieldName(key) == field)
    }

    @Test("an entry carries the message with its own metadata, the source, and every key as a field; the event's value wins a key the logger also has")
    func entryFields() {
        let event = LogEvent(
            level: .info, message: "call finished",
            metadata: ["request_id": "r-1", "message_id": "4f1c", "environment": "beta", "error": "a\u{0}b"],
            source: nil, file: "AdminService.swift", function: "call(request:)", line: 86
        )
        var entry = JournalEntry()
        JournaldLogHandler.fill(&entry, event: event, handlerMetadata: ["environment": "production", "gateway": "node1"], identifier: "vps-gateway")
        let fields = entry.fields
        #expect(fields.first == #"MESSAGE=call finished environment=beta error=a\x00b request_id=r-1"#)
        #expect(Set(fields.dropFirst()) == [
            "PRIORITY=6", "SYSLOG_IDENTIFIER=vps-gateway", "CODE_FILE=AdminService.swift", "CODE_LINE=86", "CODE_FUNC=call(request:)",
            "REQUEST_ID=r-1", "MESSAGE_ID=4f1c", "ENVIRONMENT=beta", #"ERROR=a\x00b"#, "GATEWAY=node1",
        ])
        #expect(fields.count == 11)
    }

    @Test("swift-log levels map to syslog priorities")
    func priorities() {
        #expect(JournaldLogHandler.priority(.debug) == 7)
        #expect(JournaldLogHandler.priority(.info) == 6)
        #expect(JournaldLogHandler.priority(.warning) == 4)
        #expect(JournaldLogHandler.priority(.critical) == 2)
    }
}
