import ArgumentParser
import Foundation
import GatewayBench
import GatewayProtocol
import SwiftProtobuf
#if canImport(Glibc)
import Glibc
#endif

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure a running gateway: drive calls for a while and print throughput and latency.",
        discussion: """
            A measuring tool, not a test. C callers each send a call, wait for its outcome and \
            send the next, for the given duration after a short warm-up; latency is the \
            caller's view (admin socket round trip included). Progress goes to stderr on a \
            terminal; the result to stdout.

            Examples:
              vps-gateway bench --concurrency 64 --duration 10s --mac 52:54:00:01:00:01
              vps-gateway bench --admin-socket /tmp/gw.sock --concurrency 1 --duration 5s --json
              vps-gateway bench --method Ping --payload-hex 00 --concurrency 64 --json

            JSON fields: requests, errors, throughput_rps, p50_us, p90_us, p99_us, max_us, \
            concurrency, duration_s, outcomes (count per outcome).

            Exit codes: 0 measured; 64 usage error; 69 the admin socket is unreachable.
            """
    )

    @OptionGroup var admin: AdminSocketOption

    @Option(help: ArgumentHelp("Calls in flight at once.", valueName: "count"))
    var concurrency = 1

    @Option(help: ArgumentHelp("How long to measure.", valueName: "duration"))
    var duration = DurationArgument(.seconds(10), text: "10s")

    @Option(help: ArgumentHelp("Unmeasured load first.", valueName: "duration"))
    var warmup = DurationArgument(.seconds(1), text: "1s")

    @Option(help: ArgumentHelp("The method to call.", valueName: "name"))
    var method = GatewayMethod.findVPSByLease

    @Option(help: ArgumentHelp("For FindVPSByLease: the MAC to look up.", valueName: "mac"))
    var mac = "52:54:00:01:00:01"

    @Option(help: ArgumentHelp("For other methods: the payload as hex.", valueName: "hex"))
    var payloadHex: String?

    @OptionGroup var target: CallTargetOptions

    @Option(help: ArgumentHelp("Timeout of each call.", valueName: "duration"))
    var timeout = DurationArgument(.seconds(5), text: "5s")

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard (1...10_000).contains(concurrency) else { throw ValidationError("--concurrency must be 1-10000, got \(concurrency)") }
        _ = try duration.requirePositive("--duration")
        _ = try timeout.requirePositive("--timeout")
        guard MACAddress(mac) != nil else { throw ValidationError("--mac '\(mac)' is not a MAC address; expected \(MACAddress.expectedFormat)") }
        if let payloadHex, Data(hex: payloadHex) == nil { throw ValidationError("--payload-hex is not hex") }
    }

    func run() async throws {
        let payload: Data = try payloadHex.flatMap { Data(hex: $0) }
            ?? (method == GatewayMethod.findVPSByLease ? FindVPSByLeaseRequest.with { $0.mac = mac }.serializedBytes() : Data())
        let benchmark = CallBenchmark(configuration: .init(
            concurrency: concurrency,
            duration: duration.duration,
            warmup: warmup.duration,
            request: .with {
                $0.method = method
                $0.payload = payload
                $0.environment = target.environment
                $0.instanceID = target.instanceID
                $0.timeoutMs = timeout.milliseconds
            }
        ))
        let showProgress = isatty(2) == 1
        let total = duration
        let report = try await withAdmin(admin) { client in
            try await benchmark.run(client: client) { progress in
                guard showProgress else { return }
                let seconds = Double(progress.elapsed.components.seconds)
                printError(String(format: "  %6.0fs / %@  %8d calls  %8.0f calls/s", seconds, total.text, progress.requests, seconds > 0 ? Double(progress.requests) / seconds : 0))
            }
        }
        if json {
            try printJSON(report)
        } else {
            print("""
                calls        \(report.requests) in \(report.durationS) s at concurrency \(report.concurrency)
                throughput   \(report.throughputRps) calls/s
                latency      p50 \(report.p50Us) µs   p90 \(report.p90Us) µs   p99 \(report.p99Us) µs   max \(report.maxUs) µs
                outcomes     \(report.outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
                errors       \(report.errors)
                """)
        }
    }
}
