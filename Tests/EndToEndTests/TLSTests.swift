import Foundation
import GatewayProtocol
import LeaseInventory
import Testing

/// h2 over TLS on the stream port, and mutual TLS, with certificates the test makes with
/// openssl: real handshakes between the gateway, workers and curl.
@Suite("TLS", .serialized, .timeLimit(.minutes(3)))
struct TLSTests {
    let vps = SampleInventory.Entry("vps-tls", mac: "52:54:00:f0:00:01", ip: "10.8.0.1")

    /// A CA, a server certificate for 127.0.0.1 and a client certificate, in the cluster's
    /// directory: ca.pem, server.pem/server.key, client.pem/client.key.
    func makeCertificates(_ cluster: Cluster) async throws {
        let script = """
            set -e
            cd "$0"
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=vps-gateway-test-ca -keyout ca.key -out ca.pem 2>/dev/null
            for name in server client; do
              openssl req -newkey rsa:2048 -nodes -subj /CN=$name -keyout $name.key -out $name.csr 2>/dev/null
              printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth,clientAuth\\n' > $name.ext
              openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile $name.ext -out $name.pem 2>/dev/null
            done
            """
        let process = try cluster.spawn(name: "openssl", executable: "/bin/sh", arguments: ["-c", script, cluster.directory], environment: [:])
        guard await process.waitForExit(timeout: .seconds(30)) == 0 else { throw ClusterError("openssl failed:\n\(process.log)") }
    }

    @discardableResult
    func startTLSWorker(_ cluster: Cluster, instance: String, inventory: String, clientCertificate: Bool) throws -> TestProcess {
        var arguments = [
            "worker", "--env", "production", "--instance-id", instance, "--inventory", "sqlite:\(inventory)",
            "--gateway-url", "https://127.0.0.1:\(cluster.port)", "--tls-ca", cluster.directory + "/ca.pem",
            "--backoff-initial", "200ms", "--backoff-max", "1s",
        ]
        if clientCertificate { arguments += ["--tls-certificate", cluster.directory + "/client.pem", "--tls-key", cluster.directory + "/client.key"] }
        return try cluster.spawn(name: "worker-\(instance)", arguments: arguments, environment: ["VPS_GATEWAY_API_SECRET": cluster.secret])
    }

    @Test("a worker dials an https:// gateway, checks its certificate, registers and answers; curl gets h2 over TLS; a cleartext client is refused")
    func serverTLS() async throws {
        try await Cluster.with { cluster in
            try await makeCertificates(cluster)
            try await cluster.startGateway(["--tls-certificate", cluster.directory + "/server.pem", "--tls-key", cluster.directory + "/server.key"])
            try startTLSWorker(cluster, instance: "tls-1", inventory: try cluster.inventory("production", [vps]), clientCertificate: false)
            try await cluster.waitForClients(["tls-1"])
            #expect(try await cluster.lookup(mac: vps.mac).owner?.vpsID == "vps-tls")
            let curl = try cluster.spawn(name: "curl", executable: "/usr/bin/curl", arguments: [
                "-s", "-i", "--max-time", "10", "--cacert", cluster.directory + "/ca.pem", "-H", "content-type: application/json", "-d", "{}",
                "https://127.0.0.1:\(cluster.port)/grpc.health.v1.Health/Check",
            ], environment: [:])
            #expect(await curl.waitForExit(timeout: .seconds(20)) == 0)
            #expect(curl.log.contains("HTTP/2 200") && curl.log.contains("SERVING"), "\(curl.log)")
            let cleartext = try RawSocket(port: cluster.port)
            cleartext.write(RawHTTP2.preface + RawHTTP2.emptySettings)
            #expect(cleartext.readUntilClosed(timeout: .seconds(10)).closed, "h2c on a TLS port is not served")
        }
    }

    @Test("with --tls-client-ca a worker presenting a certificate of that CA registers; one without a certificate never does")
    func mutualTLS() async throws {
        try await Cluster.with { cluster in
            try await makeCertificates(cluster)
            let gateway = try await cluster.startGateway([
                "--tls-certificate", cluster.directory + "/server.pem", "--tls-key", cluster.directory + "/server.key",
                "--tls-client-ca", cluster.directory + "/ca.pem",
            ])
            let inventory = try cluster.inventory("production", [vps])
            let anonymous = try startTLSWorker(cluster, instance: "anonymous", inventory: inventory, clientCertificate: false)
            try startTLSWorker(cluster, instance: "trusted", inventory: inventory, clientCertificate: true)
            try await cluster.waitForClients(["trusted"])
            #expect(try await cluster.lookup(mac: vps.mac).response.responderInstance == "trusted")
            #expect(await poll(timeout: .seconds(10)) { anonymous.log.contains("reconnecting") }, "\(anonymous.log.suffix(1500))")
            #expect(try await cluster.clients().map(\.instanceID) == ["trusted"])
            #expect(await poll(timeout: .seconds(10)) { gateway.log.contains("connection ended") }, "the refused handshake is logged")
        }
    }

    @Test("a TLS key that does not load stops the gateway at start with 78 and names the files")
    func badKey() async throws {
        try await Cluster.with { cluster in
            let junk = cluster.directory + "/junk.pem"
            try "not a certificate".write(toFile: junk, atomically: true, encoding: .utf8)
            let gateway = try await cluster.startGateway(["--tls-certificate", junk, "--tls-key", junk], waitUntilReady: false)
            #expect(await gateway.waitForExit(timeout: .seconds(20)) == 78)
            #expect(gateway.log.contains("cannot load TLS from \(junk)"), "\(gateway.log)")
        }
    }
}
