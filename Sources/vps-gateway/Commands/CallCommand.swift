import ArgumentParser
import Foundation
import SwiftProtobuf
import GatewayAdminClient
import GatewayProtocol

struct CallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "Send any method through the gateway and print the outcome.",
        discussion: """
            The generic form of `lookup`: the payload is the binary protobuf of the method's \
            request, given as hex or read from a file. The response payload is printed as hex.

            Examples:
              vps-gateway call Ping --payload-hex 68656c6c6f
              vps-gateway call FindVPSByLease --payload-file request.bin --env beta --json
              vps-gateway call FindVPSByLease --payload-hex 12113532... --request-id retry-42

            Exit codes: 0 ok; 1 not found; 2 no receivers, deadline exceeded or failed; 64 usage \
            error; 65 unreadable payload; 69 the admin socket is unreachable.
            """
    )

    @Argument(help: ArgumentHelp("The method name, e.g. FindVPSByLease.", valueName: "method"))
    var method: String

    @Option(help: ArgumentHelp("The request payload as hex.", valueName: "hex"))
    var payloadHex: String?

    @Option(help: ArgumentHelp("A file holding the request payload.", valueName: "path"))
    var payloadFile: String?

    @OptionGroup var target: CallTargetOptions

    @Option(help: ArgumentHelp("How long to wait for an answer.", valueName: "duration"))
    var timeout = DurationArgument(.seconds(10), text: "10s")

    @Option(help: ArgumentHelp("The request id (default: generated).", valueName: "id"))
    var requestID: String?

    @Flag(help: "Print one JSON object with the admin API's field names.")
    var json = false

    @OptionGroup var admin: AdminSocketOption

    func validate() throws {
        guard !(payloadHex != nil && payloadFile != nil) else { throw ValidationError("give --payload-hex or --payload-file, not both") }
        if let payloadHex, Data(hex: payloadHex) == nil {
            throw ValidationError("--payload-hex is not hex; expected an even number of 0-9a-f digits")
        }
        _ = try timeout.requirePositive("--timeout")
    }

    func run() async throws {
        var payload = Data()
        if let payloadHex { payload = Data(hex: payloadHex) ?? Data() }
        if let payloadFile {
            guard let data = FileManager.default.contents(atPath: payloadFile) else {
                throw fail("cannot read the payload file '\(payloadFile)'", Exit.dataError)
            }
            payload = data
        }
        let request = AdminCallRequest.with {
            $0.method = method
            $0.payload = payload
            $0.environment = target.environment
            $0.instanceID = target.instanceID
            $0.timeoutMs = timeout.milliseconds
            $0.requestID = requestID ?? ""
        }
        let response = try await withAdmin(admin) { try await $0.call(request) }
        if json {
            try printJSON(CallResponseJSON(response))
        } else {
            print(response.summary)
            if response.outcome == .ok { print(response.payload.hex) }
        }
        throw response.exitCode
    }
}
