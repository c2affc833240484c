import Foundation
import Synchronization

/// Request ids the gateway makes for calls that came without one.
enum RequestID {
    /// 32 lowercase hex digits: the wall clock in milliseconds (12 digits), then 80 bits that
    /// differ for every id, like a UUIDv7. Ids made close in time sort close together, so the
    /// journal's primary-key index grows at its right edge: a group commit then rewrites one
    /// index page instead of one page per call (random ids cost about four 4 KiB WAL pages per
    /// call).
    ///
    /// The 80 bits are a per-process random tag (16 bits) and a 64-bit counter that starts at
    /// a random value, passed through a bijective mixer (SplitMix64's finaliser): unique within
    /// the process by construction and unpredictable across processes, without the two
    /// `getrandom` system calls per id that `SystemRandomNumberGenerator` made.
    static func new(now: Date = Date()) -> String {
        let milliseconds = UInt64(max(0, now.timeIntervalSince1970 * 1000)) & 0xFFFF_FFFF_FFFF
        let high = mix(counter.wrappingAdd(1, ordering: .relaxed).oldValue)
        return String(unsafeUninitializedCapacity: 32) { bytes in
            hex(milliseconds, into: bytes, digits: 0..<12)
            hex(high, into: bytes, digits: 12..<28)
            hex(UInt64(processTag), into: bytes, digits: 28..<32)
            return 32
        }
    }

    private static let counter = Atomic<UInt64>(UInt64.random(in: .min ... .max))
    private static let processTag = UInt16.random(in: .min ... .max)

    /// SplitMix64's output function: a bijection on 64 bits, so distinct counts give distinct
    /// values, which look unrelated to each other.
    private static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private static func hex(_ value: UInt64, into bytes: UnsafeMutableBufferPointer<UInt8>, digits: Range<Int>) {
        var rest = value
        for index in digits.reversed() {
            let digit = UInt8(truncatingIfNeeded: rest & 0xF)
            bytes[index] = digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") + digit - 10
            rest >>= 4
        }
    }
}
