#if FUZZING
import CLibFuzzer
#endif
import Foundation
import FuzzTargets

/// `vps-gateway-fuzz TARGET [ARGS…]`. Built by scripts/fuzz.sh with -sanitize=fuzzer it is a
/// libFuzzer binary (ARGS are libFuzzer's: corpus directories, -max_total_time=…); in a plain
/// build it replays the files or directories in ARGS once, so a corpus doubles as a
/// regression test without the fuzzer's runtime.
@main
struct FuzzMain {
    static let targetVariable = "VPSGW_FUZZ_TARGET"
    /// Set once before the fuzzer starts; libFuzzer's C callback cannot capture it.
    nonisolated(unsafe) static var target = FuzzTarget.leaseFile

    static func main() {
        var arguments = CommandLine.arguments
        // libFuzzer re-runs itself for -merge and -fork with its own arguments, which no
        // longer name the target: the children find it in the environment.
        if arguments.count >= 2, let named = FuzzTarget(rawValue: arguments[1]) {
            arguments.remove(at: 1)
            setenv(Self.targetVariable, named.rawValue, 1)
        }
        guard let name = ProcessInfo.processInfo.environment[Self.targetVariable], let target = FuzzTarget(rawValue: name) else {
            let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
            FileHandle.standardError.write(Data("usage: vps-gateway-fuzz TARGET [corpus directories or files…]; targets: \(names)\n".utf8))
            exit(64)
        }
        Self.target = target
        #if FUZZING
        // libFuzzer reads its own arguments; the target's name is not one of them.
        var argc = Int32(arguments.count)
        var pointers: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        pointers.withUnsafeMutableBufferPointer { buffer in
            var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
            exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
                FuzzMain.target.run(Array(UnsafeBufferPointer(start: data, count: size)))
                return 0
            })
        }
        #else
        var count = 0
        for path in arguments.dropFirst() {
            for file in files(at: path) {
                guard let data = FileManager.default.contents(atPath: file) else {
                    FileHandle.standardError.write(Data("cannot read \(file)\n".utf8))
                    exit(66)
                }
                target.run(Array(data))
                count += 1
            }
        }
        print("\(target.rawValue): \(count) inputs replayed, every property held")
        #endif
    }

    static func files(at path: String) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else { return [path] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.sorted().map { path + "/" + $0 }
    }
}

/// libFuzzer's main is replaced by ours (SwiftPM links executables with `main` defined as
/// this module's entry point); the symbol is still required by its runtime.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzMain.target.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
