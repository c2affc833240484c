import Foundation
#if canImport(Glibc)
import Glibc
#endif
// Public: the benchmark drives an `AdminClient` with an admin `CallRequest`.
public import GatewayAdminClient
public import GatewayProtocol
import Synchronization
import TextFormats

/// Drives the admin `Call` with a fixed number of callers for a fixed time and measures each
/// call from the caller's side. A measuring tool, not a test: every loop ends at the deadline.
public struct CallBenchmark: Sendable {
    public struct Configuration: Sendable {
        /// Calls in flight at once.
        public var concurrency: Int
        /// How long to drive load (after the warm-up).
        public var duration: Duration
        /// Load driven first and not measured, so connections and caches are warm.
        public var warmup: Duration
        /// The call every caller repeats (a fresh request id each time).
        public var request: AdminCallRequest
        /// Calls started per second at most, spread evenly; nil: each caller calls again as
        /// soon as its last call ends. A cap: callers that are all waiting start none.
        public var rate: Int?

        public init(concurrency: Int, duration: Duration, warmup: Duration = .seconds(1), request: AdminCallRequest, rate: Int? = nil) {
            self.concurrency = concurrency
            self.duration = duration
            self.warmup = warmup
            self.request = request
            self.rate = rate
        }
    }

    /// Counts so far, for a progress line.
    public struct Progress: Sendable {
        public var requests: Int
        public var elapsed: Duration
    }

    public let configuration: Configuration

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Runs the benchmark; `progress` is called about once a second while it measures.
    public func run(
        client: AdminClient,
        progress: @Sendable @escaping (Progress) -> Void = { _ in }
    ) async throws -> BenchmarkReport {
        if configuration.warmup > .zero {
            _ = try await drive(client: client, for: configuration.warmup, counter: SharedCounter())
        }
        let counter = SharedCounter()
        let cpuBefore = Self.processCPUMicros()
        let started = ContinuousClock.now
        let samples = try await withThrowingTaskGroup(of: [Sample]?.self) { group in
            group.addTask { try await self.drive(client: client, for: self.configuration.duration, counter: counter) }
            group.addTask {
                while ContinuousClock.now - started < self.configuration.duration {
                    try? await Task.sleep(for: .seconds(1))
                    progress(Progress(requests: counter.value, elapsed: ContinuousClock.now - started))
                }
                return nil
            }
            var samples: [Sample] = []
            for try await result in group { if let result { samples = result } }
            return samples
        }
        return BenchmarkReport(
            samples: samples, elapsed: ContinuousClock.now - started, concurrency: configuration.concurrency,
            rateLimit: configuration.rate, clientCPUMicros: Self.processCPUMicros() - cpuBefore
        )
    }

    struct Sample: Sendable {
        var micros: UInt64
        var outcome: String
    }

    /// `concurrency` callers, each calling in a loop until `duration` has passed (with a rate,
    /// each call at the next start time the pacer hands out).
    private func drive(client: AdminClient, for duration: Duration, counter: SharedCounter) async throws -> [Sample] {
        let deadline = ContinuousClock.now + duration
        let pacer = configuration.rate.map { Pacer(rate: $0) }
        // On the connection's loop: a call and its answer cost no hand-off between threads,
        // and the calls started together go out in one write.
        let executor = try await client.callerExecutor()
        let samples = try await withThrowingTaskGroup(of: [Sample].self) { group in
            for _ in 0..<configuration.concurrency {
                group.addTask(executorPreference: executor) {
                    var samples: [Sample] = []
                    var request = self.configuration.request
                    while ContinuousClock.now < deadline {
                        if let pacer {
                            let startAt = pacer.nextStart()
                            guard startAt < deadline else { break }
                            if startAt > .now { try? await Task.sleep(until: startAt, tolerance: .zero) }
                        }
                        request.requestID = ""
                        let start = ContinuousClock.now
                        let outcome: String
                        do {
                            outcome = BenchmarkReport.name(of: try await client.call(request).outcome)
                        } catch {
                            outcome = "rpc_error"
                        }
                        let elapsed = ContinuousClock.now - start
                        samples.append(Sample(micros: UInt64(elapsed.wholeMicroseconds), outcome: outcome))
                        counter.increment()
                    }
                    return samples
                }
            }
            var all: [Sample] = []
            for try await part in group { all += part }
            return all
        }
        return samples
    }
}

extension CallBenchmark {
    /// User plus system CPU time of this process, so the report can say what the measuring
    /// itself cost (it shares the machine with what it measures).
    static func processCPUMicros() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1_000_000 + Int(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
    }
}

/// Start times `1 / rate` apart from its creation, one per caller's ask. A caller behind
/// its time calls at once, so a system slower than the rate is not offered more than the
/// callers can have in flight.
private final class Pacer: Sendable {
    private let first = ContinuousClock.now
    private let interval: Duration
    private let handedOut = Atomic<Int>(0)

    init(rate: Int) { interval = .seconds(1) / max(rate, 1) }

    func nextStart() -> ContinuousClock.Instant {
        first + interval * handedOut.wrappingAdd(1, ordering: .relaxed).oldValue
    }
}

/// A counter the callers share with the progress reporter.
private final class SharedCounter: Sendable {
    private let count = Atomic<Int>(0)
    func increment() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
