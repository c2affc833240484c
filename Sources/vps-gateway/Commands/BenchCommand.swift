import ArgumentParser
import Foundation
import GatewayBench
import GatewayProtocol
import GatewayWorker
import LeaseInventory
import Settings
import SwiftProtobuf
import TextFormats
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
            caller's view (admin socket round trip included). With --rate the callers start \
            at most that many calls a second between them, evenly spaced (latency then counts \
            from each call's start, not from its slot). Progress goes to stderr on a terminal; \
            the result to stdout.

            Examples:
              vps-gateway bench --concurrency 64 --duration 10s --mac 52:54:00:01:00:01
              vps-gateway bench --admin-socket /tmp/gw.sock --concurrency 1 --duration 5s --json
              vps-gateway bench --method Ping --payload-hex 00 --concurrency 64 --json
              vps-gateway bench --concurrency 64 --rate 5000 --duration 5s --json

            JSON fields: requests, errors, throughput_rps, p50_us, p90_us, p99_us, max_us, \
            concurrency, rate_limit_rps (with --rate), duration_s, client_cpu_us_per_call, \
            outcomes (count per outcome).

            With --lease-latency N it appends N leases (production's sample MACs) one at a time to \
            the gateway's lease file and times each until its line is in the hosts file; with \
            --reconcile-leases N it writes N leases and reports the gateway's reconcile time.
              vps-gateway bench --lease-latency 1000 --lease-file /tmp/l --hosts-file /tmp/h --json

            With --idle-clients N it measures memory instead: N registered, idle streams from \
            this one process (each its own connection and instance id, environment \
            bench-idle), and the gateway's resident memory (--gateway-pid) before and while \
            they are connected. The secret comes from VPS_GATEWAY_API_SECRET.
              vps-gateway bench --idle-clients 1000 --gateway-url http://127.0.0.1:1537 --gateway-pid 4242 --json

            Exit codes: 0 measured; 64 usage error; 69 the admin socket is unreachable.
            """
    )

    @OptionGroup var admin: AdminSocketOption

    @Option(help: ArgumentHelp("Calls in flight at once.", valueName: "count"))
    var concurrency = 1

    @Option(help: ArgumentHelp("How long to measure.", valueName: "duration"))
    var duration = DurationArgument(.seconds(10), text: "10s")

    @Option(help: ArgumentHelp("Start at most this many calls a second, evenly spaced (default: each caller calls again at once).", valueName: "calls/s"))
    var rate: Int?

    @Option(help: ArgumentHelp("Unmeasured load first.", valueName: "duration"))
    var warmup = DurationArgument(.seconds(1), text: "1s")

    @Option(help: ArgumentHelp("The method to call.", valueName: "name"))
    var method = RequestMethods.findVPSByLease.name

    @Option(help: ArgumentHelp("For FindVPSByLease: the MAC to look up.", valueName: "mac"))
    var mac = "52:54:00:01:00:01"

    @Option(help: ArgumentHelp("For other methods: the payload as hex.", valueName: "hex"))
    var payloadHex: String?

    @OptionGroup var target: CallTargetOptions

    @Option(help: ArgumentHelp("Timeout of each call.", valueName: "duration"))
    var timeout = DurationArgument(.seconds(5), text: "5s")

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: ArgumentHelp("Measure memory with this many idle registered clients instead of driving calls.", valueName: "count"))
    var idleClients: Int?

    @Option(help: ArgumentHelp("With --idle-clients: the gateway to connect them to.", valueName: "url"))
    var gatewayURL = "http://127.0.0.1:1537"

    @Option(help: ArgumentHelp("With --idle-clients: the gateway's pid, to read its resident memory.", valueName: "pid"))
    var gatewayPID: Int32?

    @Option(help: ArgumentHelp("With --idle-clients: how long to hold them before measuring.", valueName: "duration"))
    var hold = DurationArgument(.seconds(5), text: "5s")

    @Option(help: ArgumentHelp("Measure lease-to-hosts-line latency over this many leases of production's sample inventory instead (needs --lease-file, --hosts-file).", valueName: "count"))
    var leaseLatency: Int?

    @Option(help: ArgumentHelp("Measure the gateway's reconcile of a lease file this big instead (needs --lease-file, --hosts-file).", valueName: "count"))
    var reconcileLeases: Int?

    @Option(help: ArgumentHelp("The gateway's --dhcp-leases file, which the benchmark writes.", valueName: "path"))
    var leaseFile: String?

    @Option(help: ArgumentHelp("The gateway's --dhcp-hosts file, which the benchmark reads.", valueName: "path"))
    var hostsFile: String?

    func validate() throws {
        guard (1...10_000).contains(concurrency) else { throw ValidationError("--concurrency must be 1-10000, got \(concurrency)") }
        if let rate, !(1...1_000_000).contains(rate) { throw ValidationError("--rate must be 1-1000000 calls a second, got \(rate)") }
        _ = try duration.requirePositive("--duration")
        _ = try timeout.requirePositive("--timeout")
        guard MACAddress(mac) != nil else { throw ValidationError("--mac '\(mac)' is not a MAC address; expected \(MACAddress.expectedFormat)") }
        if let payloadHex, Data(hex: payloadHex) == nil { throw ValidationError("--payload-hex is not hex") }
        if let idleClients, !(1...20_000).contains(idleClients) { throw ValidationError("--idle-clients must be 1-20000, got \(idleClients)") }
    }

    private func measureLeases() async throws {
        guard let leaseFile, let hostsFile else {
            throw fail("--lease-latency and --reconcile-leases need --lease-file and --hosts-file (the gateway's --dhcp-leases and --dhcp-hosts)", Exit.usage)
        }
        let benchmark = LeaseBenchmark(leaseFile: leaseFile, hostsFile: hostsFile)
        let showProgress = isatty(2) == 1
        if let count = leaseLatency {
            let leases = SampleInventory.entries(environment: "production", rows: count).map {
                LeaseBenchmark.Lease(mac: $0.mac, ip: $0.ip, vpsID: $0.vpsID)
            }
            let report = try await benchmark.measureLatency(leases) { done in
                if showProgress { printError("  \(done) / \(count) leases") }
            }
            if json { try printJSON(report) } else {
                print("lease to hosts line: p50 \(report.p50Us) µs, p99 \(report.p99Us) µs, max \(report.maxUs) µs over \(report.leases) leases (\(report.timedOut) timed out)")
            }
        }
        if let count = reconcileLeases {
            let report = try await withAdmin(admin) { try await benchmark.measureReconcile(count: count, rounds: 5, admin: $0) }
            if json { try printJSON(report) } else {
                print("reconcile of \(report.leases) leases: median \(report.medianUs) µs (rounds: \(report.reconcileUs.map(String.init).joined(separator: ", ")) µs)")
            }
        }
    }

    private func measureIdleClients(_ count: Int) async throws {
        let secret = try SecretSource.load(file: nil, setting: WorkerSettings.apiSecretFile, variable: "VPS_GATEWAY_API_SECRET")
        let idle = IdleClients(
            count: count, endpoint: try GatewayEndpoint(url: gatewayURL, source: "--gateway-url"),
            apiSecret: secret, gatewayPID: gatewayPID, hold: hold.duration
        )
        let showProgress = isatty(2) == 1
        let report = try await withAdmin(admin) { admin in
            try await idle.run(admin: admin) { registered in
                if showProgress { printError("  \(registered) / \(count) clients registered") }
            }
        }
        if json {
            try printJSON(report)
        } else {
            print("""
                idle clients   \(report.registered) of \(report.idleClients) registered in \(String(format: "%.1f", report.secondsToRegister)) s
                gateway RSS    \(report.gatewayRSSKBBefore.map { "\($0 / 1024) MiB" } ?? "?") before, \(report.gatewayRSSKBAfter.map { "\($0 / 1024) MiB" } ?? "?") with the clients (\(report.perClientKB.map { "\($0) KiB" } ?? "?") per client)
                """)
        }
    }

    func run() async throws {
        if let idleClients { return try await measureIdleClients(idleClients) }
        if leaseLatency != nil || reconcileLeases != nil { return try await measureLeases() }
        let payload: Data = try payloadHex.flatMap { Data(hex: $0) }
            ?? (method == RequestMethods.findVPSByLease.name ? FindVPSByLeaseRequest.with { $0.mac = mac }.serializedBytes() : Data())
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
            },
            rate: rate
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
                calls        \(report.requests) in \(report.durationS) s at concurrency \(report.concurrency)\(report.rateLimitRps.map { ", at most \($0) a second" } ?? "") (\(report.clientCPUUsPerCall) µs CPU per call in this process)
                throughput   \(report.throughputRps) calls/s
                latency      p50 \(report.p50Us) µs   p90 \(report.p90Us) µs   p99 \(report.p99Us) µs   max \(report.maxUs) µs
                outcomes     \(report.outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
                errors       \(report.errors)
                """)
        }
    }
}
