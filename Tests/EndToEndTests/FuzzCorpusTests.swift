import Foundation
import Testing

/// The fuzz corpus (Fuzz/corpus, grown and minimized by scripts/fuzz.sh) replayed through the
/// plain build of vps-gateway-fuzz: every input a fuzzer ever kept still holds the targets'
/// properties, without libFuzzer's runtime.
@Suite("Fuzz corpus", .timeLimit(.minutes(5)))
struct FuzzCorpusTests {
    static let binary = URL(fileURLWithPath: TestBinary.path).deletingLastPathComponent().appendingPathComponent("vps-gateway-fuzz").path

    @Test("every committed input of a fuzz target replays without a crash or a broken property", arguments: ["lease-file", "session-message"])
    func corpusReplays(target: String) async throws {
        let corpus = PythonClients.repository + "/Fuzz/corpus/" + target
        let inputs = try FileManager.default.contentsOfDirectory(atPath: corpus).count
        #expect(inputs >= 3, "the corpus of \(target) is missing")
        try await Cluster.with { cluster in
            let replay = try cluster.spawn(name: "fuzz-\(target)", executable: Self.binary, arguments: [target, corpus], environment: [:])
            let status = await replay.waitForExit(timeout: .seconds(60))
            #expect(status == 0, "\(replay.log)")
            #expect(replay.log.contains("\(target): \(inputs) inputs replayed, every property held"), "\(replay.log)")
        }
    }
}
