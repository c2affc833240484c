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
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        let separator: Character = trimmed.contains("-") ? "-" : ":"
        let parts = trimmed.split(separator: separator, omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var octets: [String] = []
        for part in parts {
            guard part.count == 2, part.allSatisfy(\.isHexDigit) else { return nil }
            octets.append(part.lowercased())
        }
        self.canonical = octets.joined(separator: ":")
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

