import AsyncPrimitives
public import Foundation
import GatewayProtocol
public import Logging
import NIOCore
import NIOPosix
import Settings
import Synchronization
import TextFormats
#if canImport(Glibc)
import Glibc
#endif

/// Watches dnsmasq's lease file, looks up the owner of each lease whose hostname does not
/// name a VPS, and keeps the hosts file dnsmasq serves in step: `<ip> <vps-id>` for every
/// active lease with an owner. Reacts to inotify events on the lease file's directory and
/// reconciles on a timer as well (and when a lease expires), so a missed event costs at most
/// one interval. A directory moved away and re-created is watched again at once.
public final class LeaseWatcher: Sendable {
    public struct Configuration: Sendable {
        /// dnsmasq's `dhcp-leasefile`.
        public var leaseFile: String
        /// The `addn-hosts` file the gateway writes.
        public var hostsFile: String
        /// dnsmasq's `--pid-file`, to SIGHUP it after the hosts file changed; nil: no signal.
        public var dnsmasqPidFile: String?
        /// Reconcile at least this often. Default: `GatewaySettings.reconcileInterval`.
        public var reconcileInterval: Duration
        /// Believe a `not_found` this long before asking again. Default: `GatewaySettings.negativeCacheTTL`.
        public var negativeCacheTTL: Duration
        /// Ask again this long after a failed lookup. Default 30 s.
        public var failureRetryDelay: Duration
        /// Ask again this long after a lease's owner was found (the VPS may be gone).
        /// Default: `GatewaySettings.ownerRecheck`.
        public var positiveRecheck: Duration
        /// Hostnames taken to name a VPS, whose leases are not looked up; nil (the default)
        /// looks every lease up by MAC and IP. Opting in lets a tenant's VM that calls itself
        /// another VPS's id keep that VPS out of the hosts file.
        public var vpsHostnamePattern: HostnamePattern?
        /// Lookups in flight at once. Default 64.
        public var maxConcurrentLookups: Int
        /// A lease file larger than this is refused (and the hosts file left alone). Default 64 MiB.
        public var maxLeaseFileBytes: Int

        public init(leaseFile: String, hostsFile: String) {
            self.leaseFile = leaseFile
            self.hostsFile = hostsFile
            self.dnsmasqPidFile = nil
            self.reconcileInterval = GatewaySettings.reconcileInterval.defaultValue
            self.negativeCacheTTL = GatewaySettings.negativeCacheTTL.defaultValue
            self.failureRetryDelay = .seconds(30)
            self.positiveRecheck = GatewaySettings.ownerRecheck.defaultValue
            self.vpsHostnamePattern = nil
            self.maxConcurrentLookups = 64
            self.maxLeaseFileBytes = 64 << 20
        }
    }

    /// Looks up the owner of `lease` with `requestID`.
    public typealias Lookup = @Sendable (_ lease: DHCPLease, _ requestID: String) async -> LeaseTable.Outcome

    /// What the watcher tells its observer (the gateway's metrics).
    public enum Event: Sendable {
        /// The hosts file was replaced.
        case hostsFileWritten
        /// Active leases by state: found, not_found, failed, pending, vps_hostname (every
        /// state present, zero included).
        case leaseStates([String: Int])
    }

    /// What `vps-gateway leases` shows.
    public struct Status: Sendable {
        public var entries: [LeaseTable.Entry]
        public var summary: LeaseFileSummary
        public var lastReconcile: Date?
        public var lastReconcileMicros: Int
        public var hostsEntries: Int
        public var lastError: String?
    }

    public let configuration: Configuration
    private let lookup: Lookup
    private let logger: Logger
    private let state: Mutex<State>
    private let hosts: HostsFile
    /// Wakes the loop; one pending wake is enough, more coalesce.
    private let wake = MessageQueue<Void>(capacity: 1)

    private struct State {
        var table: LeaseTable
        var summary = LeaseFileSummary()
        var inFlight = 0
        var lastReconcile: Date?
        var lastReconcileMicros = 0
        var hostsEntries = 0
        var lastError: String?
    }

    private let observer: (@Sendable (Event) -> Void)?

    public init(configuration: Configuration, lookup: @escaping Lookup, logger: Logger, observer: (@Sendable (Event) -> Void)? = nil) {
        self.configuration = configuration
        self.observer = observer
        self.lookup = lookup
        self.logger = logger
        self.hosts = HostsFile(path: configuration.hostsFile)
        self.state = Mutex(State(table: LeaseTable(settings: .init(
            vpsHostname: configuration.vpsHostnamePattern,
            negativeTTL: Int64(configuration.negativeCacheTTL.components.seconds),
            failureRetry: Int64(configuration.failureRetryDelay.components.seconds),
            positiveRecheck: Int64(configuration.positiveRecheck.components.seconds)
        ))))
    }

    /// Drops every cached `not_found` and wakes a reconcile, so those leases are asked again:
    /// an environment that registered only now was not among those that said so.
    public func forgetNotFound(reason: String) {
        let forgotten = state.withLock { $0.table.forgetNotFound() }
        guard forgotten > 0 else { return }
        logger.info("asking again for leases nobody owned", metadata: ["leases": "\(forgotten)", "reason": "\(reason)"])
        wake.enqueue(())
    }

    /// The current state; `withEntries` false leaves out the per-lease list (cheap).
    public func status(withEntries: Bool = true) -> Status {
        let (entries, status) = state.withLock { state in
            (withEntries ? Array(state.table.entries.values) : [], Status(
                entries: [],
                summary: state.summary, lastReconcile: state.lastReconcile,
                lastReconcileMicros: state.lastReconcileMicros, hostsEntries: state.hostsEntries, lastError: state.lastError
            ))
        }
        // Sorted outside the lock, so a large listing does not hold up a reconcile.
        var result = status
        result.entries = entries.sorted { ($0.lease.ip, $0.lease.mac.canonical) < ($1.lease.ip, $1.lease.mac.canonical) }
        return result
    }

    /// Watches and reconciles until cancelled.
    public func run() async {
        logger.info("watching DHCP leases", metadata: [
            "lease_file": "\(configuration.leaseFile)", "hosts_file": "\(configuration.hostsFile)",
            "dnsmasq_pid_file": "\(configuration.dnsmasqPidFile ?? "none")",
        ])
        await withDiscardingTaskGroup { group in
            group.addTask { await self.watchDirectory() }
            while !Task.isCancelled {
                for lookup in reconcile() {
                    group.addTask { await self.resolve(lookup) }
                }
                await waitForWake()
            }
            group.cancelAll()
        }
    }

    /// Reads the lease file and returns the lookups to start.
    private func reconcile() -> [LeaseTable.Lookup] {
        let started = ContinuousClock.now
        // A replaced directory whose events were missed is still caught here, once per interval.
        checkDirectory()
        let now = Int64(Date().timeIntervalSince1970)
        let leases: [DHCPLease]
        let summary: LeaseFileSummary
        do {
            (leases, summary) = try readLeases(now: now)
        } catch {
            state.withLock { $0.lastError = error.description }
            logger.error("cannot read the DHCP lease file; the hosts file is left as it was", metadata: ["error": "\(error)"])
            return []
        }
        let (lookups, changedSummary) = state.withLock { state -> ([LeaseTable.Lookup], Bool) in
            let lookups = state.table.observe(leases, now: now, limit: max(0, configuration.maxConcurrentLookups - state.inFlight))
            state.inFlight += lookups.count
            let changed = state.summary != summary
            state.summary = summary
            return (lookups, changed)
        }
        if changedSummary && (summary.malformed > 0 || summary.expired > 0) {
            logger.info("lease file read", metadata: [
                "active": "\(summary.active)", "expired": "\(summary.expired)", "malformed": "\(summary.malformed)", "ipv6": "\(summary.ipv6)",
            ])
        }
        publishHosts(now: now)
        let micros = Int((ContinuousClock.now - started).wholeMicroseconds)
        state.withLock {
            $0.lastReconcile = Date()
            $0.lastReconcileMicros = micros
        }
        return lookups
    }

    /// A missing file is no leases (dnsmasq has not written one yet).
    private func readLeases(now: Int64) throws(DHCPError) -> ([DHCPLease], LeaseFileSummary) {
        var info = stat()
        guard stat(configuration.leaseFile, &info) == 0 else {
            if errno == ENOENT { return ([], LeaseFileSummary()) }
            throw .syscall(.leaseFileUnreadable, "stat(\(configuration.leaseFile))", errno, "cannot read the lease file")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw DHCPError(code: .leaseFileUnreadable, message: "lease file '\(configuration.leaseFile)' is not a regular file")
        }
        guard Int(info.st_size) <= configuration.maxLeaseFileBytes else {
            throw DHCPError(code: .leaseFileUnreadable, message: "lease file '\(configuration.leaseFile)' is \(info.st_size) bytes, above the \(configuration.maxLeaseFileBytes)-byte limit")
        }
        guard let data = FileManager.default.contents(atPath: configuration.leaseFile) else {
            throw DHCPError(code: .leaseFileUnreadable, message: "cannot read the lease file '\(configuration.leaseFile)'")
        }
        let text = String(decoding: data.prefix(configuration.maxLeaseFileBytes), as: UTF8.self)
        let parsed = LeaseFile.parse(text[...], now: now)
        return (parsed.leases, parsed.summary)
    }

    private func resolve(_ lookup: LeaseTable.Lookup) async {
        let outcome = await self.lookup(lookup.lease, lookup.requestID)
        let now = Int64(Date().timeIntervalSince1970)
        let changed = state.withLock { state in
            state.inFlight -= 1
            return state.table.resolved(lookup, outcome, now: now)
        }
        logger.debug("lease looked up", metadata: [
            "mac": "\(lookup.lease.mac)", "ip": "\(lookup.lease.ip)", "request_id": "\(lookup.requestID)", "outcome": "\(outcome)",
        ])
        if changed { publishHosts(now: now) }
        // Slots freed: leases waiting for one can start.
        wake.enqueue(())
    }

    /// Serializes hosts file writes (lookups finish concurrently).
    private let publishing = Mutex(())

    private func publishHosts(now: Int64) {
        if let observer { observer(.leaseStates(state.withLock { $0.table.stateCounts(now: now) })) }
        publishing.withLock { _ in
            let entries = state.withLock { $0.table.hostsEntries(now: now) }
            // No lease file yet and nothing known: leave any existing hosts file alone.
            if entries.isEmpty && !FileManager.default.fileExists(atPath: configuration.leaseFile) { return }
            do {
                guard try hosts.replace(with: HostsFile.render(entries)) else { return }
                observer?(.hostsFileWritten)
                state.withLock {
                    $0.hostsEntries = entries.count
                    $0.lastError = nil
                }
                logger.info("hosts file updated", metadata: [
                    "message_id": "\(LogEventID.hostsUpdated)", "entries": "\(entries.count)", "hosts_file": "\(configuration.hostsFile)",
                ])
                if let pidFile = configuration.dnsmasqPidFile {
                    let pid = try DnsmasqReload(pidFile: pidFile).signal()
                    logger.debug("dnsmasq told to reload", metadata: ["pid": "\(pid)"])
                }
            } catch {
                state.withLock { $0.lastError = "\(error)" }
                logger.error("cannot publish the hosts file", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Returns on an inotify event, a freed lookup slot, the next lease expiry or cache
    /// expiry, or the reconcile interval, whichever comes first.
    private func waitForWake() async {
        let now = Int64(Date().timeIntervalSince1970)
        let next = state.withLock { $0.table.nextEvent(after: now) }
        let timeout = next.map { min(configuration.reconcileInterval, .seconds($0 - now) + .milliseconds(10)) }
            ?? configuration.reconcileInterval
        await withTaskGroup(of: Void.self) { group in
            group.addTask { _ = await self.wake.nextBatch() }
            group.addTask { _ = await waitUntil(.now + timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    /// The directory watch, once ``watchDirectory()`` has one: reconciles re-check it too.
    private let directoryWatch = Mutex<LeaseDirectoryWatch?>(nil)

    /// Re-arms the watch if the lease file's directory was replaced or removed, and says so:
    /// until it is watched again, new leases wait for the timed reconcile.
    private func checkDirectory() {
        guard let watch = directoryWatch.withLock({ $0 }) else { return }
        switch watch.rearm() {
        case .unchanged, .armed:
            break
        case .rearmed:
            logger.warning("the lease file's directory was replaced; watching the new one", metadata: ["directory": "\(watch.directory)"])
            wake.enqueue(())
        case .vanished:
            logger.warning("the lease file's directory is gone; watching for it to come back", metadata: ["directory": "\(watch.directory)"])
            wake.enqueue(())
        case .failed(let error):
            logger.warning("cannot watch the lease file's directory; reconciling on the timer only until it can be", metadata: [
                "directory": "\(watch.directory)", "error": "\(String(cString: strerror(error)))",
            ])
        }
    }

    /// Feeds inotify events on the lease file's directory into the wake queue. Without
    /// inotify the timer still reconciles.
    private func watchDirectory() async {
        let directory = (configuration.leaseFile as NSString).deletingLastPathComponent.isEmpty
            ? "." : (configuration.leaseFile as NSString).deletingLastPathComponent
        guard let watch = LeaseDirectoryWatch(directory: directory) else {
            logger.warning("inotify unavailable; reconciling on the timer only", metadata: ["errno": "\(errno)"])
            return
        }
        directoryWatch.withLock { $0 = watch }
        checkDirectory()
        do {
            // inotify descriptors work with epoll, so NIO reads them like a pipe: no thread
            // of our own blocks on read().
            let channel = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .takingOwnershipOfDescriptor(input: watch.descriptor) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, Never>(wrappingChannelSynchronously: channel)
                    }
                }
            try await channel.executeThenClose { inbound in
                for try await buffer in inbound {
                    let events = watch.classify(buffer.readableBytesView)
                    if events.directoryMayHaveChanged { checkDirectory() }
                    if events.leasesMayHaveChanged { wake.enqueue(()) }
                }
            }
        } catch {
            if !Task.isCancelled {
                logger.warning("inotify watch ended; reconciling on the timer only", metadata: ["error": "\(error)"])
            }
        }
        directoryWatch.withLock { $0 = nil }
    }
}

extension LeaseTable.Outcome: CustomStringConvertible {
    public var description: String {
        switch self {
        case .found(let vpsID, _): "found \(vpsID)"
        case .notFound: "not_found"
        case .failed(let error): "failed: \(error)"
        }
    }
}
