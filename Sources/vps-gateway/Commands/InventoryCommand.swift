import ArgumentParser
import LeaseInventory

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

                It also lists the indexes a fast lookup needs that the inventory lacks, as \
                CREATE INDEX statements to run on a writable copy.

                Exit codes: 0 usable (also with missing indexes); 78 unusable (the message says why).
                """
        )

        @Argument(help: ArgumentHelp("The inventory, sqlite:PATH.", valueName: "url"))
        var url: String

        func run() async throws {
            do {
                let inventory = try SQLiteInventory(url: url)
                let missing = try inventory.missingIndexes()
                print("\(inventory.path): usable")
                if !missing.isEmpty {
                    print("warning: lookups of unknown MACs scan whole tables; on a writable copy, run:")
                    for statement in missing { print("  \(statement)") }
                }
            } catch {
                throw fail("\(error)", Exit.config)
            }
        }
    }
}
