import Foundation

/// One gateway a worker dials: where, and the node name it serves.
public struct GatewayEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// The node the gateway runs on; nil when the URL came without one (`VPS_GATEWAY_URL`).
    public var node: String?
    public var host: String
    public var port: Int
    /// `https://`: h2 over TLS (the worker's TLS settings say what to trust).
    public var usesTLS: Bool

    public init(node: String?, host: String, port: Int, usesTLS: Bool = false) {
        self.node = node
        self.host = host
        self.port = port
        self.usesTLS = usesTLS
    }

    public var description: String {
        let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        let url = "\(usesTLS ? "https" : "http")://\(address)"
        return node.map { "\($0)=\(url)" } ?? url
    }

    /// Parses `http://HOST:PORT` or `https://HOST:PORT` (the port defaults to 1537). `source`
    /// names where the text came from, for the error message.
    public init(url text: String, node: String? = nil, source: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        func invalid(_ problem: String) -> WorkerError {
            WorkerError(
                code: .invalidEndpoint,
                message: "\(source) '\(trimmed)' \(problem); expected a URL like http://gateway.example:1537"
            )
        }
        guard let components = URLComponents(string: trimmed), let scheme = components.scheme?.lowercased() else {
            throw invalid("is not a URL with a scheme")
        }
        guard scheme == "http" || scheme == "https" else { throw invalid("has scheme '\(scheme)'") }
        guard let host = components.host, !host.isEmpty else { throw invalid("has no host") }
        guard components.path.isEmpty || components.path == "/" else { throw invalid("has a path") }
        let port = components.port ?? 1537
        guard (1...65535).contains(port) else { throw invalid("has port \(port) out of range 1-65535") }
        self.init(node: node, host: host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port: port, usesTLS: scheme == "https")
    }

    /// Parses `VPS_NODE_GATEWAY_ENDPOINTS`: `node1:http://h1:1537,node2:http://h2:1537`.
    public static func parseList(_ text: String, source: String = "VPS_NODE_GATEWAY_ENDPOINTS") throws -> [GatewayEndpoint] {
        let entries = text.split(separator: ",", omittingEmptySubsequences: true)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        guard !entries.isEmpty else {
            throw WorkerError(code: .invalidEndpoint, message: "\(source) is empty; expected NODE:http://HOST:PORT[,NODE:http://HOST:PORT...]")
        }
        var seen: Set<String> = []
        return try entries.enumerated().map { index, entry in
            let label = "entry \(index + 1) of \(source)"
            guard let separator = entry.firstIndex(of: ":"),
                  !entry[..<separator].isEmpty,
                  entry[entry.index(after: separator)...].contains("://")
            else {
                throw WorkerError(
                    code: .invalidEndpoint,
                    message: "\(label) '\(entry)' has no node name or no scheme; expected NODE:http://HOST:PORT, like node1:http://10.0.0.1:1537"
                )
            }
            let node = String(entry[..<separator])
            guard !node.contains("/") else {
                throw WorkerError(code: .invalidEndpoint, message: "\(label) '\(entry)' has no node name; expected NODE:http://HOST:PORT")
            }
            guard seen.insert(node).inserted else {
                throw WorkerError(code: .invalidEndpoint, message: "\(label) repeats node '\(node)'; each node may appear once")
            }
            return try GatewayEndpoint(url: String(entry[entry.index(after: separator)...]), node: node, source: label)
        }
    }
}
