import GatewayWorker
import Testing

@Suite("Gateway endpoints")
struct GatewayEndpointTests {
    @Test("a gateway URL gives host and port; the port defaults to 1537", arguments: [
        ("http://gw.example:1600", "gw.example", 1600),
        ("http://10.0.0.1", "10.0.0.1", 1537),
        ("http://[fd00::1]:1537", "fd00::1", 1537),
        (" HTTP://Gw:1 ", "Gw", 1),
    ])
    func parsesURL(text: String, host: String, port: Int) throws {
        let endpoint = try GatewayEndpoint(url: text, source: "test")
        #expect(endpoint.host == host)
        #expect(endpoint.port == port)
        #expect(endpoint.node == nil)
    }

    @Test("URLs that cannot be dialed are refused with what was expected", arguments: [
        ("gw.example:1537", "scheme"), ("ftp://gw:1537", "scheme 'ftp'"), ("http://", "no host"),
        ("http://gw:70000", "out of range"), ("http://gw:1537/path", "path"), ("grpc://gw", "scheme 'grpc'"),
    ])
    func refusesURL(text: String, problem: String) {
        #expect {
            try GatewayEndpoint(url: text, source: "VPS_GATEWAY_URL")
        } throws: { error in
            let message = "\(error)"
            return message.contains(problem) && message.contains("VPS_GATEWAY_URL") && message.contains("expected")
        }
    }

    @Test("https:// asks for TLS; http:// does not")
    func tlsByScheme() throws {
        #expect(try GatewayEndpoint(url: "https://gw.example", source: "test").usesTLS)
        #expect(try GatewayEndpoint(url: "https://gw.example", source: "test").description == "https://gw.example:1537")
        #expect(try !GatewayEndpoint(url: "http://gw.example", source: "test").usesTLS)
    }

    @Test("the node endpoint list gives one endpoint per node")
    func parsesList() throws {
        let endpoints = try GatewayEndpoint.parseList("node1:http://h1:1537, node2:http://10.0.0.2:1600")
        #expect(endpoints == [
            GatewayEndpoint(node: "node1", host: "h1", port: 1537),
            GatewayEndpoint(node: "node2", host: "10.0.0.2", port: 1600),
        ])
    }

    @Test("list entries without a node name or scheme, repeated nodes and empty lists are refused", arguments: [
        ("http://h1:1537", "entry 1", "no node name"),
        ("node1:http://h1:1537,h2:1537", "entry 2", "no node name or no scheme"),
        ("node1:http://h1,node1:http://h2", "entry 2", "repeats node 'node1'"),
        (" , ", "VPS_NODE_GATEWAY_ENDPOINTS", "is empty"),
    ])
    func refusesList(text: String, entry: String, problem: String) {
        #expect {
            try GatewayEndpoint.parseList(text)
        } throws: { error in
            let message = "\(error)"
            return message.contains(entry) && message.contains(problem)
        }
    }
}
