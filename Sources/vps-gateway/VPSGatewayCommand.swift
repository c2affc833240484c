import ArgumentParser

@main
struct VPSGatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vps-gateway",
        abstract: "The node gateway between dnsmasq and the platform's VPS-service instances.",
        discussion: """
            One binary, several roles: `gateway` accepts the VPS-service streams, `worker` is the \
            VPS-service side that answers from an inventory, `call`, `lookup`, `clients` and \
            `bench` talk to a running gateway over its admin socket, and `journal` inspects the \
            request journal.

            Exit codes: 0 success; 1 not found (lookup, call, journal show); 2 no receivers, \
            deadline exceeded or failed; 64 usage error; 65 bad input data or a corrupt journal; \
            66 no journal at the path; 69 the gateway's admin socket is unreachable; 70 internal \
            error; 74 a write failed; 75 the supervisor gave a child up (escalate); 78 configuration error (a role refused to start, a journal \
            newer than this binary).
            """,
        version: BuildInfo.version,
        subcommands: [
            SuperviseCommand.self, CheckConfigCommand.self, GatewayCommand.self, WorkerCommand.self, LookupCommand.self, CallCommand.self,
            ClientsCommand.self, LeasesCommand.self, JournalCommand.self, BenchCommand.self, InventoryCommand.self,
        ]
    )
}
