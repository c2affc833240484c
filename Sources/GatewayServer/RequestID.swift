import Foundation

/// Request ids the gateway makes for calls that came without one.
enum RequestID {
    /// 32 lowercase hex digits: the wall clock in milliseconds (12 digits), then 80 random
    /// bits, like a UUIDv7. Ids made close in time sort close together, so the journal's
    /// primary-key index grows at its right edge: a group commit then rewrites one index page
    /// instead of one page per call (random ids cost about four 4 KiB WAL pages per call).
    static func new(now: Date = Date()) -> String {
        var generator = SystemRandomNumberGenerator()
        let milliseconds = UInt64(max(0, now.timeIntervalSince1970 * 1000)) & 0xFFFF_FFFF_FFFF
        let high: UInt64 = generator.next()
        let low: UInt64 = generator.next() & 0xFFFF
        var bytes = [UInt8](repeating: 0, count: 32)
        hex(milliseconds, into: &bytes, digits: 0..<12)
        hex(high, into: &bytes, digits: 12..<28)
        hex(low, into: &bytes, digits: 28..<32)
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hex(_ value: UInt64, into bytes: inout [UInt8], digits: Range<Int>) {
        let alphabet = Array("0123456789abcdef".utf8)
        var rest = value
        for index in digits.reversed() {
            bytes[index] = alphabet[Int(rest & 0xF)]
            rest >>= 4
        }
    }
}
