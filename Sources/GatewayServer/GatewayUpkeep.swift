import AsyncPrimitives
import CMalloc
import DHCPLeases
import GatewayJournal
import GatewayProtocol
import Logging
import ServiceLifecycle
import Telemetry
import TextFormats

// The gateway's background parts, each a `Service` that `Gateway.run` puts in its group.
// Each one that runs until stopped returns on a graceful shutdown (it is cancelled then):
// the group stops them, in reverse order, only after the servers have drained.

/// The journal's group-commit writer. Stopped last: on a graceful shutdown it commits what
/// every other part left (final rows, requests handed back) and returns.
struct JournalWriter: Service {
    let journal: RequestJournal

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await journal.run()
        } onGracefulShutdown: {
            journal.finishWriting()
        }
    }
}

/// Runs the journal's requests (new ones and those recovered), until stopped.
struct RequestRunning: Service {
    let runner: RequestRunner

    func run() async {
        await cancelWhenGracefulShutdown { await runner.run() }
    }
}

/// What the journal needs beside its writer: the recovery of an earlier run's unfinished
/// rows at start (what READY=1 waits for), then pruning, WAL checkpoints, the file check and
/// the row gauges, until stopped.
struct JournalUpkeep: Service {
    let gateway: Gateway
    let journal: RequestJournal
    let runner: RequestRunner

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await recover()
            await maintain()
        }
    }

    /// Picks up what the journal holds unfinished from an earlier run: rows past their
    /// deadline become expired, the rest are retried with their own request ids.
    private func recover() async throws {
        let expired = try await journal.expireOverdue()
        let pending = try journal.unfinishedCounts()
        // Retried before the workers are back, a request would end "not found" by whichever
        // environment reconnected first. With nothing to retry, there is nothing to wait for.
        if pending.pending + pending.inFlight > 0 { await gateway.waitForClientsToSettle() }
        let unfinished = try journal.unfinished()
        for record in unfinished { runner.submit(record) }
        gateway.readiness.update { _ = $0.insert(.recovered) }
        if expired > 0 || !unfinished.isEmpty {
            gateway.logger.notice("journal recovered", metadata: [
                "message_id": "\(LogEventID.requestRecovered)",
                "retrying": "\(unfinished.count)", "expired": "\(expired)", "journal": "\(journal.path)",
            ])
        }
    }


    /// Prunes old finished rows and checkpoints the WAL, forever (until cancelled).
    private func maintain() async {
        let configuration = gateway.configuration, logger = gateway.logger
        var sinceCheckpoint = Duration.zero
        var sincePrune = configuration.pruneInterval  // prune once soon after start
        let tick = min(configuration.checkpointInterval, configuration.pruneInterval)
        while !Task.isCancelled {
            do { try await Task.sleep(for: tick) } catch { return }
            sinceCheckpoint += tick
            sincePrune += tick
            do {
                if sincePrune >= configuration.pruneInterval {
                    sincePrune = .zero
                    let cutoff = JournalClock.now() - Int64(configuration.journalRetention.secondsValue * 1000)
                    var deleted = 0
                    // Bounded: at most 100 batches per round; the rest waits for the next one.
                    for _ in 0..<100 {
                        let batch = try await journal.pruneBatch(olderThan: cutoff)
                        deleted += batch
                        if batch == 0 || Task.isCancelled { break }
                    }
                    if deleted > 0 { logger.info("journal pruned", metadata: ["deleted": "\(deleted)"]) }
                }
                if sinceCheckpoint >= configuration.checkpointInterval {
                    sinceCheckpoint = .zero
                    try await journal.checkpoint()
                }
                if let problem = journal.checkFile() {
                    logger.error("journal file lost", metadata: ["error": "\(problem.message)"])
                }
                if let metrics = gateway.metrics {
                    let counts = try journal.stats().countsByState
                    for state in ["pending", "in_flight", "completed", "failed", "expired"] {
                        metrics.set(Metric.journalRows, state, to: Double(counts[state] ?? 0))
                    }
                }
            } catch {
                logger.error("journal upkeep failed", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// Hands freed heap back to the kernel once a minute. glibc gives back only the top of an
/// arena by itself: after 1,000 clients had disconnected, 70 MB stayed resident while
/// 1.7 MB was in use. `malloc_trim` also releases the free pages inside the arenas.
struct FreedMemoryReturn: Service {
    func run() async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do { try await Task.sleep(for: .seconds(60)) } catch { return }
                malloc_trim(0)
            }
        }
    }
}

/// Watches the DHCP lease file and keeps the hosts file, once the environments are back:
/// looking leases up before they are would cache wrong "not found" answers from whichever
/// connected first.
struct LeaseWatching: Service {
    let gateway: Gateway
    let watcher: LeaseWatcher

    func run() async {
        await cancelWhenGracefulShutdown {
            await gateway.waitForClientsToSettle()
            await watcher.run()
        }
    }
}
