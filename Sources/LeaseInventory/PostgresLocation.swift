import Foundation

/// `postgres://USER@HOST[:PORT]/DB[?sslmode=disable|prefer|require|verify-full]`, checked.
/// A password in the URL is refused: it would show in `ps`, the unit and the YAML. It comes
/// from a file (`--inventory-password-file`) or a systemd credential instead.
public struct PostgresLocation: Sendable, Equatable, CustomStringConvertible {
    public enum SSLMode: String, Sendable, CaseIterable {
        /// No TLS (a database on the same host or a trusted network).
        case disable
        /// TLS if the server offers it, without checking its certificate (libpq's default).
        case prefer
        /// TLS or no connection; the certificate is not checked.
        case require
        /// TLS with the certificate checked against the system's roots and the host name.
        case verifyFull = "verify-full"
    }

    public var user: String
    public var host: String
    public var port: Int
    public var database: String
    public var sslMode: SSLMode

    public init(url: String) throws {
        guard let components = URLComponents(string: url), let scheme = components.scheme,
              scheme == "postgres" || scheme == "postgresql" else {
            throw Self.invalid(url, "is not a URL")
        }
        if components.password != nil {
            throw InventoryError(code: .invalidURL, message: "inventory URL '\(Self.redacted(url))' carries a password; remove it and give it with --inventory-password-file (or the systemd credential inventory-password), so it is not on a command line")
        }
        guard let user = components.user, !user.isEmpty else { throw Self.invalid(url, "names no user (postgres://USER@HOST/DB)") }
        guard let host = components.host, !host.isEmpty else { throw Self.invalid(url, "names no host") }
        let database = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        guard !database.isEmpty, !database.contains("/") else { throw Self.invalid(url, "names no database (postgres://USER@HOST/DB)") }
        let port = components.port ?? 5432
        guard (1...65535).contains(port) else { throw Self.invalid(url, "has port \(port); expected 1-65535") }
        var sslMode = SSLMode.prefer
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let value = item.value, let mode = SSLMode(rawValue: value) else {
                    throw Self.invalid(url, "has sslmode '\(item.value ?? "")'; expected one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                sslMode = mode
            default:
                throw Self.invalid(url, "has the parameter '\(item.name)'; only sslmode is understood")
            }
        }
        self.user = user
        self.host = host
        self.port = port
        self.database = database
        self.sslMode = sslMode
    }

    /// The URL without any secret, as logs and errors show it.
    public var description: String {
        "postgres://\(user)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)?sslmode=\(sslMode.rawValue)"
    }

    private static func invalid(_ url: String, _ problem: String) -> InventoryError {
        InventoryError(code: .invalidURL, message: "inventory URL '\(redacted(url))' \(problem); expected postgres://USER@HOST[:PORT]/DB[?sslmode=disable|prefer|require|verify-full]")
    }

    /// `postgres://u:secret@h/db` → `postgres://u:***@h/db`, for a URL that is refused.
    static func redacted(_ url: String) -> String {
        guard let at = url.firstIndex(of: "@"), let schemeEnd = url.range(of: "://")?.upperBound, schemeEnd < at,
              let colon = url[schemeEnd..<at].firstIndex(of: ":") else { return url }
        return String(url[..<url.index(after: colon)]) + "***" + String(url[at...])
    }
}
