import Foundation
import Logging
@testable import LogOutput
import Testing

@Suite("Text log lines")
struct StderrLogHandlerTests {
    private func line(_ metadata: Logger.Metadata, message: String = "call finished") -> String {
        let time = timespec(tv_sec: 1_795_000_000, tv_nsec: 123_456_789)
        return String(decoding: StderrLogHandler.textLine(time: time, level: .info, label: "gateway", message: message, metadata: metadata), as: UTF8.self)
    }

    @Test("a line is the UTC time to the millisecond, the level, the label, the message and the fields sorted by key")
    func layout() {
        #expect(line(["outcome": "ok", "attempts": "1", "duration_us": .stringConvertible(412)])
            == "2026-11-18T11:06:40.123Z info gateway: call finished attempts=1 duration_us=412 outcome=ok")
    }

    @Test("the logger's own metadata is sorted in with the entry's, and the entry's value wins a key both have")
    func loggerMetadataMergedIn() {
        let time = timespec(tv_sec: 1_795_000_000, tv_nsec: 123_456_789)
        let text = String(decoding: StderrLogHandler.textLine(
            time: time, level: .info, label: "worker", message: "request handled",
            metadata: ["request_id": "r-1", "gateway": "node2"], handlerMetadata: ["gateway": "node1", "attempt": "1"]
        ), as: UTF8.self)
        #expect(text == "2026-11-18T11:06:40.123Z info worker: request handled attempt=1 gateway=node2 request_id=r-1")
    }

    @Test("a value with spaces, quotes, '=', backslashes or control characters is quoted and escaped, so an entry stays one line")
    func escaping() {
        let text = line(["hostname": "evil\nFAKE line=1 \"x\"\\", "empty": "", "tab": "a\tb\u{1B}"])
        #expect(text == #"2026-11-18T11:06:40.123Z info gateway: call finished empty="" hostname="evil\nFAKE line=1 \"x\"\\" tab="a\tb\x1b""#)
        #expect(!text.contains("\n"))
    }

    @Test("the timestamp agrees with Foundation's ISO 8601 formatting", arguments: [0, 951_782_400, 1_795_000_000, 4_102_444_799])
    func timestamp(seconds: Int) {
        let time = timespec(tv_sec: seconds, tv_nsec: 250_000_000)
        let expected = Date(timeIntervalSince1970: Double(seconds) + 0.25).formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        #expect(String(decoding: StderrLogHandler.timestamp(time), as: UTF8.self) == expected)
    }
}
