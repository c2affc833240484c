import ArgumentParser
import Foundation
import GatewayAdminClient
import GatewayJournal
import GatewayProtocol
import Logging
import Settings
import SwiftProtobuf
import TextFormats
#if canImport(Glibc)
import Glibc
#endif

struct JournalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal",
        abstract: "Inspect and maintain the request journal (also while the gateway runs).",
        discussion: """
            The journal records every request before it is sent: pending → in_flight → \
            completed (answered: ok or not_found), failed (attempts kept failing) or expired \
            (its deadline passed). Reading commands open it as WAL readers and never block the \
            gateway; `prune` writes in small transactions beside it; `replay` on a live gateway \
            goes through its admin socket.

            Exit codes: 0 done; 1 no such request (show); 64 usage error; 65 corrupt journal or \
            failed verification; 66 no journal at the path; 69 replay: the gateway's admin \
            socket is unreachable (use --offline); 74 a write failed; 78 the journal is newer \
            than this binary.
            """,
        subcommands: [List.self, Show.self, Stats.self, Replay.self, Prune.self, Verify.self, Generate.self]
    )
}

/// The journal's path, shared by the subcommands.
struct JournalPathOption: ParsableArguments {
    @Option(name: .customLong(GatewaySettings.journal.flag), help: ArgumentHelp("The gateway's journal. Env: GATEWAY_JOURNAL. Default: \(GatewaySettings.journal.defaultValue).", valueName: "path"))
    var journal: String?

    var path: String {
        get throws { try GatewaySettings.journal.value(journal) }
    }

    func open(writable: Bool = false) throws -> RequestJournal {
        do {
            return try RequestJournal.openExisting(at: path, writable: writable, logger: Logger(label: "journal"))
        } catch let error as JournalError {
            throw fail(error.message, journalExitCode(error))
        }
    }
}

func journalExitCode(_ error: JournalError) -> ExitCode {
    switch error.code {
    case .corrupt: Exit.dataError
    case .cannotOpen: Exit.noInput
    case .notFound: Exit.notFound
    case .writeFailed, .closed: Exit.ioError
    default: Exit.config
    }
}

/// `--since`: a duration ago (`1h`, `7d`) or an ISO 8601 time.
struct SinceArgument: ExpressibleByArgument {
    let milliseconds: Int64

    init?(argument: String) {
        if let duration = DurationArgument(argument: argument) {
            milliseconds = JournalClock.now() - duration.totalMilliseconds
        } else if let date = try? Date(argument, strategy: .iso8601) {
            milliseconds = Int64(date.timeIntervalSince1970 * 1000)
        } else {
            return nil
        }
    }
}

/// A journal state on the command line.
struct StateArgument: ExpressibleByArgument {
    let state: JournalRecord.State

    init?(argument: String) {
        guard let state = JournalRecord.State(rawValue: argument) else { return nil }
        self.state = state
    }

    static var allValueStrings: [String] { JournalRecord.State.allCases.map(\.rawValue) }
}

/// A journal row in JSON, every field present, times in ISO 8601.
struct RecordJSON: Encodable {
    var request_id, method, origin, state: String
    var target_environment, target_instance: String?
    var attempts: Int
    var created_at, updated_at, next_attempt_at, deadline_at: String
    var lease_owner, responder_instance, responder_environment, outcome, error: String?
    var payload_hex: String
    var result_payload_hex: String?

    init(_ record: JournalRecord) {
        func time(_ milliseconds: Int64) -> String { JournalClock.date(milliseconds).formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)) }
        request_id = record.requestID
        method = record.method
        origin = record.origin
        state = record.state.rawValue
        target_environment = record.targetEnvironment
        target_instance = record.targetInstance
        attempts = record.attempts
        created_at = time(record.createdAt)
        updated_at = time(record.updatedAt)
        next_attempt_at = time(record.nextAttemptAt)
        deadline_at = time(record.deadlineAt)
        lease_owner = record.leaseOwner
        responder_instance = record.responderInstance
        responder_environment = record.responderEnvironment
        outcome = record.outcome?.rawValue
        error = record.error
        payload_hex = record.payload.hex
        result_payload_hex = record.resultPayload?.hex
    }
}

extension JournalCommand {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List requests, newest first.",
            discussion: """
                Examples:
                  vps-gateway journal list --state failed
                  vps-gateway journal list --method FindVPSByLease --since 1h --json
                  vps-gateway journal list --since 2026-11-27T06:00:00Z --limit 1000
                """
        )

        @OptionGroup var journal: JournalPathOption
        @Option(help: ArgumentHelp("Only this state: pending, in_flight, completed, failed, expired.", valueName: "state"))
        var state: StateArgument?
        @Option(help: ArgumentHelp("Only this method.", valueName: "name"))
        var method: String?
        @Option(help: ArgumentHelp("Only requests created since: a duration ago (1h, 7d) or an ISO 8601 time.", valueName: "time"))
        var since: SinceArgument?
        @Option(help: ArgumentHelp("At most this many rows.", valueName: "count"))
        var limit = 100
        @Flag(help: "Print {\"requests\": [...]}.")
        var json = false

        func run() async throws {
            let records = try journal.open().list(.init(state: state?.state, method: method, since: since?.milliseconds, limit: limit))
            if json {
                try printJSON(["requests": records.map(RecordJSON.init)])
                return
            }
            guard !records.isEmpty else {
                print("no requests match")
                return
            }
            let rows = [["REQUEST-ID", "STATE", "OUTCOME", "METHOD", "ATTEMPTS", "CREATED", "ORIGIN"]] + records.map {
                [$0.requestID, $0.state.rawValue, $0.outcome?.rawValue ?? "-", $0.method, "\($0.attempts)",
                 JournalClock.date($0.createdAt).formatted(.iso8601), $0.origin]
            }
            printTable(rows)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one request: its state, attempts, outcome and result.",
            discussion: """
                Examples:
                  vps-gateway journal show 3f2a020ada66ada059af47899432df83
                  vps-gateway journal show retry-42 --json

                Exit codes: 0 shown; 1 no request with that id.
                """
        )

        @OptionGroup var journal: JournalPathOption
        @Argument(help: ArgumentHelp("The request id.", valueName: "id"))
        var id: String
        @Flag(help: "Print the row as JSON.")
        var json = false

        func run() async throws {
            let journal = try self.journal.open()
            guard let record = try journal.record(id) else {
                throw fail("no request '\(id)' in journal '\(journal.path)'; `vps-gateway journal list` shows what is there", Exit.notFound)
            }
            let view = RecordJSON(record)
            if json {
                try printJSON(view)
                return
            }
            var lines: [(String, String)] = [
                ("request id", view.request_id), ("method", view.method), ("state", view.state),
                ("outcome", view.outcome ?? "-"), ("attempts", "\(view.attempts)"), ("origin", view.origin),
                ("target", [view.target_environment.map { "environment \($0)" }, view.target_instance.map { "instance \($0)" }].compactMap { $0 }.joined(separator: ", ").nonEmpty ?? "all"),
                ("created", view.created_at), ("updated", view.updated_at), ("deadline", view.deadline_at),
                ("next attempt", view.next_attempt_at), ("lease owner", view.lease_owner ?? "-"),
                ("responder", view.responder_instance.map { "\(view.responder_environment ?? "?")/\($0)" } ?? "-"),
                ("error", view.error ?? "-"), ("payload", view.payload_hex.isEmpty ? "-" : view.payload_hex),
                ("result", view.result_payload_hex ?? "-"),
            ]
            if record.method == RequestMethods.findVPSByLease.name, let result = record.resultPayload,
               let owner = try? FindVPSByLeaseResponse(serializedBytes: result) {
                lines.append(("vps", "\(owner.vpsID) (organization \(owner.organizationID))"))
            }
            let width = lines.map(\.0.count).max() ?? 0
            for (key, value) in lines {
                // Hex is safe as it is (and long); everything else may hold a worker's text.
                let shown = key == "payload" || key == "result" ? value : Printable.escaped(value, limit: 4096)
                print("\(key.padding(toLength: width, withPad: " ", startingAt: 0))  \(shown)")
            }
        }
    }

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Counts per state, the oldest unfinished request's age, database and WAL size.",
            discussion: """
                Examples:
                  vps-gateway journal stats
                  vps-gateway journal stats --json
                """
        )

        @OptionGroup var journal: JournalPathOption
        @Flag(help: "Print one JSON object.")
        var json = false

        func run() async throws {
            let stats = try journal.open().stats()
            if json {
                try printJSON(stats)
                return
            }
            for state in JournalRecord.State.allCases {
                print("\(state.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0))  \(stats.countsByState[state.rawValue] ?? 0)")
            }
            print("oldest unfinished  \(stats.oldestPendingAgeSeconds.map { String(format: "%.1f s ago", $0) } ?? "-")")
            print("database   \(stats.databaseBytes) bytes, WAL \(stats.walBytes) bytes, schema version \(stats.schemaVersion)")
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send finished requests again with their own request ids.",
            discussion: """
                Picks requests by id, or every failed or expired one (optionally since a time), \
                gives them a new deadline and sends them again. Workers answer a request id they \
                answered recently from their response cache, so a handler runs at most once per \
                id within that window.

                On a live gateway this goes through its admin socket and returns once the \
                requests are queued (`journal list --state pending` shows them working). With \
                --offline (no gateway running) it only marks them pending; the next gateway start \
                sends them.

                Examples:
                  vps-gateway journal replay --state expired --since 1h
                  vps-gateway journal replay --id 3f2a020ada66ada059af47899432df83 --id retry-42
                  vps-gateway journal replay --state failed --offline --journal /var/lib/vps-gateway/journal.sqlite3
                """
        )

        @OptionGroup var journal: JournalPathOption
        @OptionGroup var admin: AdminSocketOption
        @Option(name: .customLong("id"), help: ArgumentHelp("A request id (repeatable).", valueName: "id"))
        var ids: [String] = []
        @Option(help: ArgumentHelp("Every request in this state: failed, expired or completed.", valueName: "state"))
        var state: StateArgument?
        @Option(help: ArgumentHelp("Only requests created since: a duration ago or an ISO 8601 time.", valueName: "time"))
        var since: SinceArgument?
        @Option(help: ArgumentHelp("The replayed requests' new timeout.", valueName: "duration"))
        var timeout = DurationArgument(.seconds(10), text: "10s")
        @Flag(help: "No gateway is running: mark the requests pending in the journal file for its next start.")
        var offline = false
        @Flag(help: "Print {\"replayed\": N, \"request_ids\": [...]}.")
        var json = false

        func validate() throws {
            guard !ids.isEmpty || state != nil else { throw ValidationError("give --id ID (repeatable) or --state failed|expired") }
            if let state = state?.state, !state.isTerminal { throw ValidationError("--state \(state.rawValue) cannot be replayed: those requests are still running") }
            _ = try timeout.requirePositive("--timeout")
        }

        func run() async throws {
            let replayed: [String]
            if offline {
                let journal = try self.journal.open(writable: true)
                do {
                    replayed = try await journal.resetForReplayOffline(
                        .init(requestIDs: ids, state: state?.state, since: since?.milliseconds),
                        deadline: JournalClock.now() + timeout.totalMilliseconds
                    ).map(\.requestID)
                } catch let error as JournalError {
                    throw fail(error.message, journalExitCode(error))
                }
            } else {
                let request = AdminReplayRequest.with {
                    $0.requestIds = ids
                    $0.state = state?.state.rawValue ?? ""
                    $0.sinceMs = since?.milliseconds ?? 0
                    $0.timeoutMs = timeout.milliseconds
                }
                replayed = try await withAdmin(admin) { try await $0.replay(request) }.requestIds
            }
            if json {
                try printJSON(ReplayJSON(replayed: replayed.count, request_ids: replayed))
            } else {
                print(replayed.isEmpty ? "nothing to replay" : "replaying \(replayed.count) request(s)\(offline ? " at the next gateway start" : "")")
            }
        }

        struct ReplayJSON: Encodable {
            var replayed: Int
            var request_ids: [String]
        }
    }

    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete finished requests older than a given age.",
            discussion: """
                Deletes completed, failed and expired rows last updated before the cutoff, 1,000 \
                per transaction, so a running gateway is never held up for long. The gateway \
                also prunes by itself (--journal-retention, default 7d).

                Examples:
                  vps-gateway journal prune --older-than 7d
                  vps-gateway journal prune --older-than 12h --json
                """
        )

        @OptionGroup var journal: JournalPathOption
        @Option(help: ArgumentHelp("Age of the finished rows to delete.", valueName: "duration"))
        var olderThan: DurationArgument
        @Flag(help: "Print {\"deleted\": N}.")
        var json = false

        func run() async throws {
            let journal = try self.journal.open(writable: true)
            let cutoff = JournalClock.now() - olderThan.totalMilliseconds
            let showProgress = isatty(2) == 1
            var deleted = 0
            do {
                // Bounded by the rows that exist: each round deletes up to 1,000 and stops at 0.
                while true {
                    let batch = try await journal.pruneBatch(olderThan: cutoff)
                    deleted += batch
                    if showProgress && batch > 0 { printError("  \(deleted) deleted") }
                    if batch == 0 { break }
                }
            } catch let error as JournalError {
                throw fail("\(error.message) (\(deleted) deleted before)", journalExitCode(error))
            }
            if json { try printJSON(["deleted": deleted]) } else { print("deleted \(deleted) finished request(s) older than \(olderThan)") }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the journal's integrity and schema version.",
            discussion: """
                Runs PRAGMA integrity_check and compares the schema with this build's migrations.

                Examples:
                  vps-gateway journal verify
                  vps-gateway journal verify --json

                Exit codes: 0 ok; 65 problems found (listed); 66 no journal.
                """
        )

        @OptionGroup var journal: JournalPathOption
        @OptionGroup var migrations: MigrationsOption
        @Flag(help: "Print one JSON object.")
        var json = false

        func run() async throws {
            let journal = try self.journal.open()
            let verification: RequestJournal.Verification
            do {
                verification = try journal.verify(against: try migrations.load())
            } catch let error as JournalError {
                throw fail(error.message, journalExitCode(error))
            }
            if json {
                try printJSON(verification)
            } else {
                print("integrity  \(verification.integrity.joined(separator: "; "))")
                print("schema     version \(verification.schemaVersion) (this build knows up to \(verification.latestKnownVersion))")
            }
            if !verification.ok { throw Exit.dataError }
        }
    }

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write many pending requests, to measure how fast a gateway replays them.",
            discussion: """
                For benchmarks: writes COUNT pending rows (ids PREFIX-000001…) straight into the \
                journal file. Run it while no gateway uses the file; the next gateway start sends \
                them all.

                Examples:
                  vps-gateway journal generate --count 100000 --method Ping --payload-hex 00 --journal /tmp/j.sqlite3
                """
        )

        @OptionGroup var journal: JournalPathOption
        @OptionGroup var migrations: MigrationsOption
        @Option(help: ArgumentHelp("How many rows.", valueName: "count"))
        var count: Int
        @Option(help: ArgumentHelp("Their method.", valueName: "name"))
        var method = RequestMethods.ping.name
        @Option(help: ArgumentHelp("Their payload as hex.", valueName: "hex"))
        var payloadHex = ""
        @Option(help: ArgumentHelp("Their deadline from now.", valueName: "duration"))
        var deadline = DurationArgument(.seconds(3600), text: "1h")
        @Option(help: ArgumentHelp("Request id prefix.", valueName: "text"))
        var prefix = "generated"

        func validate() throws {
            guard (1...10_000_000).contains(count) else { throw ValidationError("--count must be 1-10000000, got \(count)") }
            guard Data(hex: payloadHex) != nil else { throw ValidationError("--payload-hex is not hex") }
        }

        func run() async throws {
            var logger = Logger(label: "journal")
            logger.logLevel = .warning
            let journal: RequestJournal
            do {
                journal = try await RequestJournal.open(at: self.journal.path, migrations: try migrations.load(), durability: .normal, logger: logger)
            } catch let error as JournalError {
                throw fail(error.message, journalExitCode(error))
            }
            let showProgress = isatty(2) == 1
            let total = count
            try await journal.generatePending(
                count: count, method: method, payload: Data(hex: payloadHex) ?? Data(),
                deadline: JournalClock.now() + deadline.totalMilliseconds, prefix: prefix
            ) { written in
                if showProgress { printError("  \(written) / \(total)") }
            }
            print("wrote \(count) pending request(s) to \(journal.path)")
        }
    }
}

extension String {
    var nonEmpty: String? { isEmpty ? nil : self }
}

/// Prints rows as aligned columns.
/// Prints `rows` as aligned columns. Cells come from outside (instance ids, worker errors),
/// so each is escaped: a control character cannot move the cursor or fake a row.
func printTable(_ rows: [[String]]) {
    let rows = rows.map { $0.map { Printable.escaped($0, limit: 512) } }
    guard let header = rows.first else { return }
    let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
    for row in rows {
        print(zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  "))
    }
}
