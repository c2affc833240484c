import Foundation
public import GatewayProtocol
import TextFormats

/// What `vps-gateway bench --json` prints: one object, latencies in microseconds as seen by
/// the caller (admin socket round trip included).
public struct BenchmarkReport: Codable, Sendable {
    public var requests: Int
    /// Calls that did not end `ok` or `not_found` (including RPC errors).
    public var errors: Int
    public var throughputRps: Double
    public var p50Us: UInt64
    public var p90Us: UInt64
    public var p99Us: UInt64
    public var maxUs: UInt64
    public var concurrency: Int
    /// `--rate`: calls started per second at most; absent when unpaced.
    public var rateLimitRps: Int?
    public var durationS: Double
    /// CPU time the benchmark process itself spent per call (its share of the machine).
    public var clientCPUUsPerCall: Double
    /// Calls per outcome name (`ok`, `not_found`, `no_receivers`, ..., `rpc_error`).
    public var outcomes: [String: Int]

    enum CodingKeys: String, CodingKey {
        case requests, errors, concurrency, outcomes
        case throughputRps = "throughput_rps"
        case p50Us = "p50_us", p90Us = "p90_us", p99Us = "p99_us", maxUs = "max_us"
        case durationS = "duration_s", rateLimitRps = "rate_limit_rps"
        case clientCPUUsPerCall = "client_cpu_us_per_call"
    }

    init(samples: [CallBenchmark.Sample], elapsed: Duration, concurrency: Int, rateLimit: Int?, clientCPUMicros: Int) {
        let sorted = samples.map(\.micros).sorted()
        func percentile(_ p: Double) -> UInt64 {
            guard !sorted.isEmpty else { return 0 }
            let rank = Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1
            return sorted[min(max(rank, 0), sorted.count - 1)]
        }
        let seconds = elapsed.secondsValue
        var outcomes: [String: Int] = [:]
        for sample in samples { outcomes[sample.outcome, default: 0] += 1 }
        self.requests = samples.count
        self.errors = samples.count - (outcomes["ok"] ?? 0) - (outcomes["not_found"] ?? 0)
        self.throughputRps = seconds > 0 ? (Double(samples.count) / seconds * 10).rounded() / 10 : 0
        self.p50Us = percentile(50)
        self.p90Us = percentile(90)
        self.p99Us = percentile(99)
        self.maxUs = sorted.last ?? 0
        self.concurrency = concurrency
        self.rateLimitRps = rateLimit
        self.durationS = (seconds * 1000).rounded() / 1000
        self.outcomes = outcomes
        self.clientCPUUsPerCall = samples.isEmpty ? 0 : (Double(clientCPUMicros) / Double(samples.count)).rounded()
    }

    /// The outcome's name as the JSON output spells it.
    public static func name(of outcome: AdminOutcome) -> String {
        switch outcome {
        case .ok: "ok"
        case .notFound: "not_found"
        case .noReceivers: "no_receivers"
        case .deadlineExceeded: "deadline_exceeded"
        case .failed: "failed"
        case .unspecified, .UNRECOGNIZED: "unspecified"
        }
    }
}
