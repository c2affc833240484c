import GatewayProtocol
@testable import GatewayServer
import Telemetry
import Testing

@Suite("Metrics counted on every call")
struct HotMetricsTests {
    private static func exposition(_ registry: MetricsRegistry) -> String {
        String(decoding: registry.exposition(), as: UTF8.self)
    }

    @Test("call outcomes keep their own series for the first 32 method names; later, empty and overlong names count as other")
    func methodNamesBeyondTheLimitCountAsOther() {
        let registry = MetricsRegistry()
        let calls = OutcomeMetrics(registry, counts: Metric.calls, durations: Metric.callDuration, nameLimit: 32)
        for index in 0..<32 { calls.record("Method\(index)", outcome: "ok", duration: .milliseconds(1)) }
        calls.record("Method32", outcome: "ok", duration: .milliseconds(1))
        calls.record("", outcome: "failed", duration: .milliseconds(1))
        calls.record(String(repeating: "m", count: 65), outcome: "ok", duration: .milliseconds(1))
        // A name that has its series keeps it, and gains outcomes, after the limit is reached.
        calls.record("Method0", outcome: "not_found", duration: .milliseconds(1))
        calls.record("Method0", outcome: "ok", duration: .milliseconds(1))
        let text = Self.exposition(registry)
        #expect(text.contains(#"vps_gateway_calls_total{method="Method0",outcome="ok"} 2"#))
        #expect(text.contains(#"vps_gateway_calls_total{method="Method0",outcome="not_found"} 1"#))
        #expect(text.contains(#"vps_gateway_calls_total{method="Method31",outcome="ok"} 1"#))
        #expect(!text.contains("Method32"))
        #expect(text.contains(#"vps_gateway_calls_total{method="other",outcome="ok"} 2"#))
        #expect(text.contains(#"vps_gateway_calls_total{method="other",outcome="failed"} 1"#))
        #expect(text.contains(#"vps_gateway_call_duration_seconds_count{method="other"} 3"#))
        #expect(text.contains(#"vps_gateway_call_duration_seconds_count{method="Method0"} 3"#))
    }

    @Test("stream messages: the types each direction carries are exported from zero; an unknown type is still counted")
    func streamMessageTypes() {
        let registry = MetricsRegistry()
        let metrics = HotMetrics(registry)
        #expect(Self.exposition(registry).contains(#"vps_gateway_stream_messages_total{direction="in",type="response"} 0"#))
        #expect(Self.exposition(registry).contains(#"vps_gateway_stream_messages_total{direction="out",type="request"} 0"#))
        metrics.streamIn.count(.response)
        metrics.streamIn.count(.response)
        metrics.streamIn.count(nil)
        metrics.streamOut.count(.register)  // not a type the gateway sends: through the registry
        let text = Self.exposition(registry)
        #expect(text.contains(#"vps_gateway_stream_messages_total{direction="in",type="response"} 2"#))
        #expect(text.contains(#"vps_gateway_stream_messages_total{direction="in",type="unknown"} 1"#))
        #expect(text.contains(#"vps_gateway_stream_messages_total{direction="out",type="register"} 1"#))
    }
}
