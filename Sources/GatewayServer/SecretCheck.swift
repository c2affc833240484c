/// Compares a presented secret with the configured one in time that depends only on their
/// lengths, so a network peer cannot learn the secret byte by byte from response times.
package struct SecretCheck: Sendable {
    private let expected: [UInt8]

    package init(secret: String) {
        self.expected = Array(secret.utf8)
    }

    package func accepts(_ presented: String?) -> Bool {
        guard let presented else { return false }
        let given = Array(presented.utf8)
        // Fold the length difference in and walk the expected secret fully either way.
        var difference = UInt8(truncatingIfNeeded: given.count ^ expected.count)
        for index in expected.indices {
            let byte = index < given.count ? given[index] : 0
            difference |= byte ^ expected[index]
        }
        return difference == 0 && !expected.isEmpty
    }
}
