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

    @Test("swift-log levels map to syslog priorities")
    func priorities() {
        #expect(JournaldLogHandler.priority(.debug) == 7)
        #expect(JournaldLogHandler.priority(.info) == 6)
        #expect(JournaldLogHandler.priority(.warning) == 4)
        #expect(JournaldLogHandler.priority(.critical) == 2)
    }
}
