import Foundation
// Public: keys hold parsed MAC addresses.
public import TextFormats

/// What the gateway knows about each active lease: whether its owner was looked up, is being
/// looked up, or is known. A pure state machine; ``LeaseWatcher`` does the I/O.
public struct LeaseTable: Sendable {
    public struct Settings: Sendable {
        /// Leases whose hostname matches need no lookup: the name is taken to identify a VPS.
        /// Nil (the default): every lease is looked up by MAC and IP, since the hostname is the
        /// tenant's choice and proves nothing (a VM can call itself another VPS's id).
        public var vpsHostname: HostnamePattern?
        /// How long a `not_found` is believed before asking again, in seconds.
        public var negativeTTL: Int64
        /// How long after a failed lookup to try again, in seconds.
        public var failureRetry: Int64
        /// How long a found owner is trusted before it is asked again, in seconds (the VPS may
        /// have been deleted; the old answer stays in the hosts file meanwhile).
        public var positiveRecheck: Int64
        /// How long a lease must be missing from the file before it is dropped, in seconds:
        /// dnsmasq rewrites the file in place, and a read in the middle of that can miss a
        /// line that is still there.
        public var vanishGrace: Int64

        public init(vpsHostname: HostnamePattern? = nil, negativeTTL: Int64, failureRetry: Int64, positiveRecheck: Int64 = 600, vanishGrace: Int64 = 3) {
            self.vpsHostname = vpsHostname
            self.negativeTTL = negativeTTL
            self.failureRetry = failureRetry
            self.positiveRecheck = positiveRecheck
            self.vanishGrace = vanishGrace
        }
    }

    /// A lease is known by its MAC and IP: the same MAC with a new IP is a new lease.
    public struct Key: Hashable, Sendable {
        public var mac: MACAddress
        public var ip: String
    }

    /// A VPS that owns a lease.
    public struct Owner: Sendable, Hashable {
        public var vpsID: String
        public var organizationID: String
    }

    public enum Resolution: Sendable, Hashable {
        case vpsHostname
        /// A lookup is running; `previous` is the owner found before (a recheck), which stays
        /// in the hosts file until the lookup says otherwise.
        case pending(requestID: String, since: Int64, previous: Owner?)
        case found(Owner, at: Int64)
        case notFound(at: Int64, retryAt: Int64)
        /// The lookup failed; a `previous` owner stays in the hosts file meanwhile.
        case failed(error: String, at: Int64, retryAt: Int64, previous: Owner?)

        /// The owner the hosts file shows for this resolution.
        public var owner: Owner? {
            switch self {
            case .found(let owner, _): owner
            case .pending(_, _, let previous), .failed(_, _, _, let previous): previous
            case .vpsHostname, .notFound: nil
            }
        }
    }

    public struct Entry: Sendable, Hashable {
        public var lease: DHCPLease
        public var resolution: Resolution?
        /// When the lease was last missing from the file, while within the grace period.
        public var missingSince: Int64?
    }

    /// A lookup to start.
    public struct Lookup: Sendable, Hashable {
        public var key: Key
        public var lease: DHCPLease
        public var requestID: String
    }

    public let settings: Settings
    public private(set) var entries: [Key: Entry] = [:]

    public init(settings: Settings) {
        self.settings = settings
    }

    /// Takes the lease file's active leases: forgets leases that are gone and returns the
    /// lookups to start, at most `limit`. A lease with a lookup pending, a known owner or a
    /// fresh `not_found` is not looked up again.
    public mutating func observe(_ leases: [DHCPLease], now: Int64, limit: Int) -> [Lookup] {
        var current: [Key: DHCPLease] = [:]
        for lease in leases { current[Key(mac: lease.mac, ip: lease.ip)] = lease }
        let currentMACs = Set(current.keys.map(\.mac))
        for (key, entry) in entries where current[key] == nil {
            if currentMACs.contains(key.mac) {
                entries[key] = nil  // the MAC holds another address now: this lease is over
            } else if let missingSince = entry.missingSince {
                if now - missingSince >= settings.vanishGrace { entries[key] = nil }
            } else {
                entries[key]?.missingSince = now
            }
        }
        var waiting: [Key] = []
        for (key, lease) in current {
            var entry = entries[key] ?? Entry(lease: lease, resolution: nil)
            entry.lease = lease
            entry.missingSince = nil
            if let hostname = lease.hostname, let pattern = settings.vpsHostname, pattern.matches(hostname) {
                // dnsmasq names a lease after the hosts file entry for its address, so a lease
                // we resolved comes back carrying the VPS id as its hostname: keep what we know.
                if let owner = entry.resolution?.owner, owner.vpsID.lowercased() == hostname.lowercased() {
                    entries[key] = entry
                    continue
                }
                entry.resolution = .vpsHostname
            } else if needsLookup(entry.resolution, now: now) {
                waiting.append(key)
            }
            entries[key] = entry
        }
        // Sorted, so which leases wait when the limit is reached does not depend on hashing.
        var lookups: [Lookup] = []
        for key in waiting.sorted(by: { ($0.ip, $0.mac.canonical) < ($1.ip, $1.mac.canonical) }).prefix(max(limit, 0)) {
            let requestID = Self.requestID(for: key, now: now, bucket: settings.negativeTTL)
            let previous = entries[key]?.resolution?.owner
            entries[key]?.resolution = .pending(requestID: requestID, since: now, previous: previous)
            lookups.append(Lookup(key: key, lease: current[key]!, requestID: requestID))
        }
        return lookups
    }

    /// Forgets every `not_found`, so the next ``observe(_:now:limit:)`` asks again; returns
    /// how many leases it forgot.
    public mutating func forgetNotFound() -> Int {
        var forgotten = 0
        for (key, entry) in entries {
            if case .notFound = entry.resolution {
                entries[key]?.resolution = nil
                forgotten += 1
            }
        }
        return forgotten
    }

    private func needsLookup(_ resolution: Resolution?, now: Int64) -> Bool {
        switch resolution {
        case nil, .vpsHostname: true
        case .pending: false
        case .found(_, let at): now >= at + settings.positiveRecheck
        case .notFound(_, let retryAt), .failed(_, _, let retryAt, _): now >= retryAt
        }
    }

    public enum Outcome: Sendable, Hashable {
        case found(vpsID: String, organizationID: String)
        case notFound
        case failed(String)
    }

    /// Records a lookup's outcome; ignored when the lease is gone or a newer lookup replaced
    /// it. Returns whether the hosts entries may have changed.
    @discardableResult
    public mutating func resolved(_ lookup: Lookup, _ outcome: Outcome, now: Int64) -> Bool {
        guard var entry = entries[lookup.key], case .pending(let requestID, _, let previous) = entry.resolution, requestID == lookup.requestID else {
            return false
        }
        switch outcome {
        case .found(let vpsID, let organizationID):
            entry.resolution = .found(Owner(vpsID: vpsID, organizationID: organizationID), at: now)
        case .notFound:
            // Also for a recheck: the VPS no longer owns the lease, so its line goes.
            entry.resolution = .notFound(at: now, retryAt: now + settings.negativeTTL)
        case .failed(let error):
            entry.resolution = .failed(error: error, at: now, retryAt: now + settings.failureRetry, previous: previous)
        }
        entries[lookup.key] = entry
        return true
    }

    /// Active leases by what their lookup found, every state present (zero included):
    /// found, not_found, failed, pending (also not looked up yet), vps_hostname.
    public func stateCounts(now: Int64) -> [String: Int] {
        entries.values.reduce(into: ["found": 0, "not_found": 0, "failed": 0, "pending": 0, "vps_hostname": 0]) { counts, entry in
            guard entry.lease.isActive(at: now) else { return }
            let state = switch entry.resolution {
            case .found: "found"
            case .notFound: "not_found"
            case .failed: "failed"
            case .pending, nil: "pending"
            case .vpsHostname: "vps_hostname"
            }
            counts[state, default: 0] += 1
        }
    }

    /// `<ip> <vps-id>` for every lease that is active and has an owner.
    public func hostsEntries(now: Int64) -> [HostsFile.Entry] {
        entries.values.compactMap { entry in
            guard entry.lease.isActive(at: now), let owner = entry.resolution?.owner else { return nil }
            return HostsFile.Entry(ip: entry.lease.ip, name: owner.vpsID)
        }
    }

    /// The earliest moment after `now` that a lease expires or a cached answer runs out, so
    /// the watcher can wake for it instead of waiting for the next reconcile.
    public func nextEvent(after now: Int64) -> Int64? {
        var times: [Int64] = []
        for entry in entries.values {
            if entry.lease.expiry > now { times.append(entry.lease.expiry) }
            if let missingSince = entry.missingSince { times.append(max(missingSince + settings.vanishGrace, now + 1)) }
            switch entry.resolution {
            case .notFound(_, let retryAt), .failed(_, _, let retryAt, _): if retryAt > now { times.append(retryAt) }
            case .found(_, let at): if at + settings.positiveRecheck > now { times.append(at + settings.positiveRecheck) }
            default: break
            }
        }
        return times.min()
    }

    /// One lookup's request id per lease and time bucket: a restarted gateway asking again
    /// within the bucket gets the journal's answer (or joins the run it recovered) instead of
    /// starting another lookup.
    static func requestID(for key: Key, now: Int64, bucket: Int64) -> String {
        "dhcp-\(key.mac.canonical.replacingOccurrences(of: ":", with: ""))-\(key.ip)-\(now / max(bucket, 1))"
    }
}

/// A hostname glob: `*` any run of characters, `?` one; compared case-insensitively.
public struct HostnamePattern: Sendable, Hashable, CustomStringConvertible {
    public let pattern: String
    private let characters: [Character]

    public init(_ pattern: String) {
        self.pattern = pattern
        self.characters = Array(pattern.lowercased())
    }

    public func matches(_ hostname: String) -> Bool {
        Self.match(characters[...], Array(hostname.lowercased())[...])
    }

    private static func match(_ pattern: ArraySlice<Character>, _ text: ArraySlice<Character>) -> Bool {
        guard let first = pattern.first else { return text.isEmpty }
        switch first {
        case "*":
            var rest = text
            while true {
                if match(pattern.dropFirst(), rest) { return true }
                guard !rest.isEmpty else { return false }
                rest = rest.dropFirst()
            }
        case "?":
            return !text.isEmpty && match(pattern.dropFirst(), text.dropFirst())
        default:
            return text.first == first && match(pattern.dropFirst(), text.dropFirst())
        }
    }

    public var description: String { pattern }
}
