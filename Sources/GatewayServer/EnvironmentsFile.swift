import Foundation
// Public: the reloader logs what it could not read.
public import Logging
// Public: the reloader is a Service beside the gateway.
public import ServiceLifecycle
import UnixSignals

/// The environments a gateway serves, from a file the supervisor writes (one name per line
/// or comma-separated; `#` starts a comment), re-read on SIGHUP: the supervisor adds or
/// removes an environment without restarting the gateway.
public enum EnvironmentsFile {
    /// The names in `text`.
    public static func parse(_ text: String) -> Set<String> {
        var names: Set<String> = []
        for line in text.split(whereSeparator: \.isNewline) {
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            for name in content.split(separator: ",") {
                let trimmed = name.trimmingCharacters(in: .whitespaces)
                if !trimmed.isEmpty { names.insert(trimmed) }
            }
        }
        return names
    }

    public static func read(_ path: String) throws -> Set<String> {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw GatewayError(code: .invalidConfiguration, message: "cannot read the environments file '\(path)'; give a readable file with one environment name per line")
        }
        return parse(String(decoding: data, as: UTF8.self))
    }
}

/// Re-reads the environments file on every SIGHUP and hands the names to the gateway.
public struct EnvironmentsFileReloader: Service {
    let path: String
    let gateway: Gateway
    let logger: Logger

    public init(path: String, gateway: Gateway, logger: Logger) {
        self.path = path
        self.gateway = gateway
        self.logger = logger
    }

    public func run() async {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            do {
                gateway.setAnsweringEnvironments(try EnvironmentsFile.read(path))
            } catch {
                logger.error("could not re-read the environments file; keeping the environments as they were", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
    }
}
