/// The rule every name the gateway writes into dnsmasq's hosts file obeys: one DNS label,
/// 1-63 letters, digits and hyphens, not starting or ending with a hyphen. A VPS id is untrusted
/// input (any instance holding the secret answers with one); dnsmasq reads `<ip> <name>…`
/// lines, so a newline or a space in a name would add records of the sender's choosing.
public enum HostsName {
    /// Nil when `text` is a valid label, else what is wrong with it (for the refusal log).
    public static func problem(with text: String) -> String? {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { return "it is empty" }
        guard bytes.count <= 63 else { return "it is \(bytes.count) bytes long; a DNS label has at most 63" }
        let allowed = bytes.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D }
        guard allowed else { return "it holds characters other than letters, digits and '-'" }
        guard bytes.first != 0x2D, bytes.last != 0x2D else { return "it starts or ends with '-'" }
        return nil
    }

    public static func isValid(_ text: String) -> Bool { problem(with: text) == nil }
}

/// Untrusted text made safe to print on a terminal or in a log line: control characters,
/// escapes and non-ASCII shown as `\u{…}`, cut at `limit` characters.
public enum Printable {
    public static func escaped(_ text: String, limit: Int = 256) -> String {
        var out = ""
        for (index, scalar) in text.unicodeScalars.enumerated() {
            if index >= limit { out += "…"; break }
            if scalar.value >= 0x20 && scalar.value < 0x7F && scalar != "\\" {
                out.unicodeScalars.append(scalar)
            } else {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            }
        }
        return out
    }
}
