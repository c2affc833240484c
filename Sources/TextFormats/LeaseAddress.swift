import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A MAC address in the canonical form the inventory compares against: six lowercase
/// two-digit hex octets separated by colons (`52:54:00:ab:cd:ef`).
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    /// The canonical text, lowercase with colons.
    public let canonical: String

    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` in any case, ignoring surrounding
    /// whitespace. Returns nil for anything else.
    public init?(_ text: String) {
        // By bytes, not Characters: this runs once per lookup, and grapheme iteration made it
        // 3 % of a loaded worker's CPU.
        var bytes = Array(text.utf8)[...]
        while let first = bytes.first, Self.isSpace(first) { bytes.removeFirst() }
        while let last = bytes.last, Self.isSpace(last) { bytes.removeLast() }
        guard bytes.count == 17 else { return nil }
        let separator = bytes[bytes.startIndex + 2]
        guard separator == UInt8(ascii: ":") || separator == UInt8(ascii: "-") else { return nil }
        var canonical: [UInt8] = []
        canonical.reserveCapacity(17)
        for (offset, byte) in bytes.enumerated() {
            if offset % 3 == 2 {
                guard byte == separator else { return nil }
                canonical.append(UInt8(ascii: ":"))
                continue
            }
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"): canonical.append(byte)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): canonical.append(byte + 32)
            default: return nil
            }
        }
        self.canonical = String(decoding: canonical, as: UTF8.self)
    }

    /// Whitespace and newlines as `trimmingCharacters(in: .whitespacesAndNewlines)` sees them
    /// in ASCII; anything else makes the text no MAC anyway.
    private static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || (0x09...0x0D).contains(byte)
    }

    public var description: String { canonical }

    /// What the error messages say a MAC should look like.
    public static let expectedFormat = "six hex octets separated by ':' or '-', like 52:54:00:ab:cd:ef"
}

/// Checks the text form of IP addresses, the way the C library parses them.
public enum IPAddressText {
    /// True when `text` is a dotted IPv4 address or an IPv6 address.
    public static func isValid(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }

    public static let expectedFormat = "an IPv4 address like 10.0.0.5 or an IPv6 address like fd00::5"
}

