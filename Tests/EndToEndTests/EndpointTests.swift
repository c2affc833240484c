import Foundation
import GatewayProtocol
import LeaseInventory
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The gateway's own HTTP/2 endpoint from the outside: curl on the admin socket and the port
/// (Connect unary JSON), grpcio, and hostile bytes. Real sockets, real clients.
@Suite("RPC endpoint", .serialized, .timeLimit(.minutes(4)))
struct EndpointTests {
    let vps = SampleInventory.Entry("vps-e", mac: "52:54:00:e0:00:01", ip: "10.7.0.1")

    /// `curl` with `arguments`; its output (headers with `-i`, then the body).
    func curl(_ cluster: Cluster, _ arguments: [String]) async throws -> CLIResult {
        let process = try cluster.spawn(name: "curl", executable: "/usr/bin/curl", arguments: ["-s", "--max-time", "20"] + arguments, environment: [:])
        guard let status = await process.waitForExit(timeout: .seconds(30)) else { throw ClusterError("curl did not finish") }
        return CLIResult(status: status, output: process.log)
    }

    /// A Connect unary JSON call to the admin socket, as the README shows it.
    func admin(_ cluster: Cluster, _ method: String, _ body: String) async throws -> CLIResult {
        try await curl(cluster, [
            "-i", "--unix-socket", cluster.adminSocket, "--http2-prior-knowledge", "-H", "content-type: application/json",
            "-d", body, "http://localhost/vpsgateway.admin.v1.GatewayAdmin/\(method)",
        ])
    }

    @Test("curl speaks the admin API in Connect unary JSON: Call with JSON arguments gets the decoded result; ListClients and ListLeases answer; errors carry Connect's code and HTTP status")
    func adminWithCurl() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])
            let found = try await admin(cluster, "Call", #"{"method":"FindVPSByLease","arguments":{"mac":"\#(vps.mac)"}}"#)
            #expect(found.output.contains("HTTP/2 200"))
            #expect(found.output.contains(#""outcome":"OUTCOME_OK""#), "\(found.output)")
            #expect(found.output.contains(#""result":{"#) && found.output.contains(#""vpsId":"vps-e""#), "\(found.output)")
            let clients = try await admin(cluster, "ListClients", "{}")
            #expect(clients.output.contains(#""instanceId":"production-1""#), "\(clients.output)")
            let leases = try await admin(cluster, "ListLeases", "{}")
            #expect(leases.output.contains("HTTP/2 200"), "\(leases.output)")
            let bad = try await admin(cluster, "Call", #"{"method":"FindVPSByLease","arguments":{"mac":1,"nope":2}}"#)
            #expect(bad.output.contains("HTTP/2 400"), "\(bad.output)")
            #expect(bad.output.contains(#""code":"invalid_argument""#), "\(bad.output)")
            let unknown = try await curl(cluster, [
                "-i", "--unix-socket", cluster.adminSocket, "--http2-prior-knowledge", "-H", "content-type: application/json",
                "-d", "{}", "http://localhost/vpsgateway.admin.v1.GatewayAdmin/NoSuchMethod",
            ])
            #expect(unknown.output.contains("HTTP/2 404") && unknown.output.contains(#""code":"unimplemented""#), "\(unknown.output)")
        }
    }

    @Test("a unary request whose body trickles in over many reads is answered like one that arrives whole")
    func slowUnaryBody() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])
            // 700 bytes at 350 bytes/s: the body's DATA frames come in reads of their own,
            // after the HEADERS, so the endpoint's stream reader takes the stream over midway.
            let body = #"{"method":"FindVPSByLease","arguments":{"mac":"\#(vps.mac)"}"# + String(repeating: " ", count: 640) + "}"
            let slow = try await curl(cluster, [
                "-i", "--unix-socket", cluster.adminSocket, "--http2-prior-knowledge", "-H", "content-type: application/json",
                "--limit-rate", "350", "--data-binary", body, "http://localhost/vpsgateway.admin.v1.GatewayAdmin/Call",
            ])
            #expect(slow.output.contains("HTTP/2 200"), "\(slow.output)")
            #expect(slow.output.contains(#""vpsId":"vps-e""#), "\(slow.output)")
        }
    }

    @Test("health: Check and Watch answer SERVING over Connect once the gateway is ready; an unknown service is not_found")
    func health() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            let base = ["-i", "--http2-prior-knowledge", "-H", "content-type: application/json"]
            let check = try await curl(cluster, base + ["-d", "{}", "http://127.0.0.1:\(cluster.port)/grpc.health.v1.Health/Check"])
            #expect(check.output.contains(#"{"status":"SERVING"}"#), "\(check.output)")
            let named = try await curl(cluster, base + ["-d", #"{"service":"obiente.cloud.vpsgateway.v1.VPSGatewayService"}"#, "http://127.0.0.1:\(cluster.port)/grpc.health.v1.Health/Check"])
            #expect(named.output.contains("SERVING"), "\(named.output)")
            let unknown = try await curl(cluster, base + ["-d", #"{"service":"nope"}"#, "http://127.0.0.1:\(cluster.port)/grpc.health.v1.Health/Check"])
            #expect(unknown.output.contains("HTTP/2 404") && unknown.output.contains("not_found"), "\(unknown.output)")
            // Watch over the Connect streaming protocol: one envelope with SERVING, then (the
            // client stops reading at --max-time) nothing to wait for.
            var envelope: [UInt8] = [0, 0, 0, 0, 2]
            envelope += Array("{}".utf8)
            let request = cluster.directory + "/watch.bin"
            _ = FileManager.default.createFile(atPath: request, contents: Data(envelope))
            let watch = try await curl(cluster, [
                "--http2-prior-knowledge", "-H", "content-type: application/connect+json", "--max-time", "2",
                "--data-binary", "@\(request)", "http://127.0.0.1:\(cluster.port)/grpc.health.v1.Health/Watch",
            ])
            #expect(watch.output.contains(#"{"status":"SERVING"}"#), "\(watch.output)")
        }
    }

    @Test("a grpcio client built from the original .proto (no environment, no methods) registers and its answer wins")
    func grpcioClient() async throws {
        try await Cluster.with { cluster in
            try PythonClients.require()
            try await cluster.startGateway()
            let client = try cluster.spawn(
                name: "grpcio", executable: PythonClients.python,
                arguments: [PythonClients.repository + "/Tests/Clients/grpcio_worker.py", "--target", "127.0.0.1:\(cluster.port)",
                            "--secret", cluster.secret, "--instance", "grpcio-1", "--lease", "\(vps.mac)=vps-grpcio"],
                environment: PythonClients.environment(stubs: "grpc-stubs")
            )
            try await cluster.waitForClients(["grpcio-1"])
            let (response, owner) = try await cluster.lookup(mac: vps.mac)
            #expect(response.outcome == .ok, "\(client.log)")
            #expect(owner?.vpsID == "vps-grpcio")
            #expect(response.responderEnvironment == "default")
        }
    }

    @Test("an unknown content type gets 415 with Accept-Post and one rate-limited warning naming the peer, path and type")
    func unknownContentType() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway()
            for _ in 0..<5 {
                let refused = try await curl(cluster, ["-i", "--http2-prior-knowledge", "-H", "content-type: text/xml", "-d", "<x/>", "http://127.0.0.1:\(cluster.port)/obiente.cloud.vpsgateway.v1.VPSGatewayService/RegisterGateway"])
                #expect(refused.output.contains("HTTP/2 415"))
                #expect(refused.output.lowercased().contains("accept-post: application/grpc"), "\(refused.output)")
            }
            #expect(await poll(timeout: .seconds(20)) { gateway.log.contains("refused a request on the stream port") })
            let warnings = gateway.log.split(separator: "\n").filter { $0.contains("refused a request on the stream port") }
            #expect(warnings.count == 1, "\(warnings)")
            #expect(warnings.first?.contains("text/xml") == true && warnings.first?.contains("ipv4:127.0.0.1") == true)
        }
    }

    @Test("hostile bytes on the port: garbage, HTTP/1.1, a preface then garbage frames — each connection is refused, the gateway keeps serving its clients")
    func hostileConnections() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway()
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])

            let garbage = try RawSocket(port: cluster.port)
            garbage.write((0..<65536).map { _ in UInt8.random(in: 0...255) })
            #expect(garbage.readUntilClosed(timeout: .seconds(10)).closed, "garbage closes the connection")

            let http1 = try RawSocket(port: cluster.port)
            http1.write(Array("GET / HTTP/1.1\r\nHost: gateway\r\n\r\n".utf8))
            let answer = http1.readUntilClosed(timeout: .seconds(10))
            #expect(answer.closed)
            #expect(String(decoding: answer.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 505"), "\(String(decoding: answer.bytes, as: UTF8.self))")

            let frames = try RawSocket(port: cluster.port)
            frames.write(RawHTTP2.preface + RawHTTP2.emptySettings + (0..<4096).map { _ in UInt8.random(in: 0...255) })
            #expect(frames.readUntilClosed(timeout: .seconds(10)).closed, "garbage frames close the connection")

            #expect(try await cluster.lookup(mac: vps.mac).response.outcome == .ok)
            #expect(gateway.isRunning)
        }
    }

    @Test("a message over the limit is refused at its length prefix, in gRPC's and Connect's form; a 100 MB one costs the gateway no memory")
    func hugeMessage() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway()
            let before = try #require(residentKiB(of: gateway.pid))
            func envelope(claiming length: Int) -> [UInt8] {
                var bytes: [UInt8] = [0]
                withUnsafeBytes(of: UInt32(length).bigEndian) { bytes += $0 }
                return bytes
            }
            // gRPC, with curl: 6 MB sent in full (the gateway reads the rest and drops it).
            let path = cluster.directory + "/big.bin"
            _ = FileManager.default.createFile(atPath: path, contents: Data(envelope(claiming: 6_000_000)) + Data(count: 6_000_000))
            let grpc = try await curl(cluster, ["-i", "--http2-prior-knowledge", "-H", "content-type: application/grpc", "-H", "te: trailers",
                                                "--data-binary", "@\(path)", "http://127.0.0.1:\(cluster.port)/grpc.health.v1.Health/Check"])
            #expect(grpc.output.contains("grpc-status: 8"), "\(grpc.output.prefix(600))")
            // Connect, by hand: a stream whose first envelope claims 100 MB. The answer comes
            // at the prefix, before the bytes: nothing of them is buffered.
            let raw = try RawSocket(port: cluster.port)
            let fields = [(":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
                          (":authority", "gateway"), ("content-type", "application/connect+json")]
            raw.write(RawHTTP2.preface + RawHTTP2.emptySettings + RawHTTP2.headers(stream: 1, fields, endStream: false)
                      + RawHTTP2.frame(type: 0x0, flags: 0, stream: 1, payload: envelope(claiming: 100 * 1024 * 1024) + [UInt8](repeating: 0, count: 8000)))
            let answered = await poll(timeout: .seconds(10)) {
                String(decoding: raw.readUntilClosed(timeout: .milliseconds(200)).bytes, as: UTF8.self).contains("resource_exhausted")
            }
            #expect(answered, "the end of stream names resource_exhausted")
            let after = try #require(residentKiB(of: gateway.pid))
            #expect(after - before < 32 * 1024, "resident memory grew from \(before) KiB to \(after) KiB")
            _ = try await cluster.clients()
        }
    }

    @Test("an idle-connection flood: past --max-connections they are closed as they arrive, the rest after the idle timeout; a worker still gets in")
    func idleConnectionFlood() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(["--max-connections", "60", "--idle-connection-timeout", "1s"])
            let before = try #require(residentKiB(of: gateway.pid))
            // Silent connections: no preface, no bytes, no CPU on the client's side.
            let flood = try (0..<150).map { _ in try RawSocket(port: cluster.port) }
            let refusedAtOnce = flood.filter { $0.readUntilClosed(timeout: .milliseconds(20)).closed }.count
            #expect(refusedAtOnce >= 80, "over the cap of 60 (the admin client's own connection counts too): \(refusedAtOnce) closed at once")
            let allClosed = await poll(timeout: .seconds(15)) { flood.allSatisfy { $0.readUntilClosed(timeout: .milliseconds(5)).closed } }
            #expect(allClosed, "idle connections are closed after the idle timeout")
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])
            let after = try #require(residentKiB(of: gateway.pid))
            #expect(after - before < 32 * 1024, "resident memory grew from \(before) KiB to \(after) KiB")
            #expect(gateway.log.contains("connections are open, the limit"))
        }
    }

    @Test("10,000 streams held open on one connection: the gateway refuses those over its limit of 256, stays within bounded memory and keeps answering")
    func streamFlood() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway()
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])
            let before = try #require(residentKiB(of: gateway.pid))
            let flood = try RawSocket(port: cluster.port)
            var bytes = RawHTTP2.preface + RawHTTP2.emptySettings
            // Watch streams whose request never comes: each stays open until refused.
            let fields = [(":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Watch"),
                          (":authority", "gateway"), ("content-type", "application/connect+json")]
            for index in 0..<10_000 {
                bytes += RawHTTP2.headers(stream: UInt32(2 * index + 1), fields, endStream: false)
            }
            // The gateway may close the connection before the last frame is written.
            flood.write(bytes)
            let (response, owner) = try await cluster.lookup(mac: vps.mac)
            #expect(response.outcome == .ok && owner?.vpsID == "vps-e", "the registered worker is still served")
            let after = try #require(residentKiB(of: gateway.pid))
            #expect(after - before < 64 * 1024, "resident memory grew from \(before) KiB to \(after) KiB")
            let answer = flood.readUntilClosed(timeout: .seconds(15)).bytes
            let types = RawHTTP2.frameTypes(answer)
            // RST_STREAM (REFUSED_STREAM) for streams over the limit, or GOAWAY for the flood.
            #expect(types.contains(0x3) || types.contains(0x7), "frame types received: \(Set(types))")
            #expect(gateway.isRunning)
        }
    }
}
