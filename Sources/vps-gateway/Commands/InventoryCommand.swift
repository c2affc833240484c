import ArgumentParser
import LeaseInventory
import Logging

struct InventoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inventory",
        abstract: "Create or check an environment's inventory database.",
        subcommands: [Create.self, Check.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a SQLite inventory with the platform's tables, empty or with sample VPSs.",
            discussion: """
                Sample rows are deterministic: environment production owns MACs 52:54:00:01:xx:xx \
                and IPs 10.1.x.x, beta 52:54:00:02:…, dev 52:54:00:03:…; VPS ids are \
                vps-ENV-0001 and up.

                Examples:
                  vps-gateway inventory create /tmp/production.sqlite3 --environment production --sample-rows 100
                  vps-gateway inventory create /var/lib/vps-service/dev.sqlite3 --environment dev --sample-rows 0

                Exit codes: 0 created; 64 usage error; 78 the file exists or cannot be written.
                """
        )

        @Argument(help: ArgumentHelp("The new file.", valueName: "path"))
        var path: String

        @Option(name: [.customLong("environment"), .customLong("env")], help: ArgumentHelp("The environment the sample rows belong to.", valueName: "name"))
        var environment: String

        @Option(help: ArgumentHelp("How many sample VPSs to insert (0: empty tables).", valueName: "count"))
        var sampleRows = 3

        func validate() throws {
            guard (0...1_000_000).contains(sampleRows) else { throw ValidationError("--sample-rows must be 0-1000000, got \(sampleRows)") }
        }

        func run() async throws {
            do {
                try SampleInventory.create(at: path, environment: environment, rows: sampleRows)
            } catch {
                throw fail("\(error)", Exit.config)
            }
            print("created \(path) with \(sampleRows) sample VPS(s) of environment '\(environment)'")
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check that an inventory can be opened and has the tables and columns the lookup reads.",
            discussion: """
                Examples:
                  vps-gateway inventory check sqlite:/var/lib/vps-service/production.sqlite3
                  vps-gateway inventory check 'postgres://vps_gateway@db.internal/platform?sslmode=require' \\
                      --password-file /etc/vps-gateway/inventory-password
                  vps-gateway inventory check sqlite:production.sqlite3 --json

                For PostgreSQL it connects, checks that the role may read vps_instances and \
                dhcp_leases and that they have the columns the lookups read. It also lists the \
                indexes a fast lookup needs that the inventory lacks, as CREATE INDEX statements.

                Exit codes: 0 usable (also with missing indexes); 69 the database cannot be \
                reached now; 78 unusable (wrong password, no such database, missing tables or \
                columns; the message says which).
                """
        )

        @Argument(help: ArgumentHelp("The inventory: sqlite:PATH or postgres://USER@HOST[:PORT]/DB[?sslmode=…].", valueName: "url"))
        var url: String

        @Option(help: ArgumentHelp("File holding a PostgreSQL inventory's password. Default: $VPS_INVENTORY_PASSWORD_FILE.", valueName: "path"))
        var passwordFile: String?

        @Flag(help: "Print the result as JSON: {inventory, usable, error, missing_indexes}.")
        var json = false

        func run() async throws {
            let logger = Logger(label: "inventory-check") { _ in SwiftLogNoOpLogHandler() }
            do {
                let opened = try await InventoryOpener.open(url: url, password: try InventoryPassword.load(file: passwordFile, for: url), requireReachable: true, logger: logger)
                if json {
                    try printJSON(CheckJSON(inventory: opened.inventory.displayName, usable: true, error: nil, missing_indexes: opened.missingIndexes))
                    return
                }
                print("\(opened.inventory.displayName): usable")
                if !opened.missingIndexes.isEmpty {
                    print("warning: lookups of unknown MACs scan whole tables; on a writable copy (or as the table owner), run:")
                    for statement in opened.missingIndexes { print("  \(statement)") }
                }
            } catch {
                let unreachable = (error as? InventoryError)?.code == .unavailable
                if json {
                    try printJSON(CheckJSON(inventory: url, usable: false, error: "\(error)", missing_indexes: []))
                    throw ExitCode(unreachable ? Exit.unavailable.rawValue : Exit.config.rawValue)
                }
                throw fail("\(error)", unreachable ? Exit.unavailable : Exit.config)
            }
        }

        struct CheckJSON: Encodable {
            var inventory: String
            var usable: Bool
            var error: String?
            var missing_indexes: [String]
        }
    }
}
