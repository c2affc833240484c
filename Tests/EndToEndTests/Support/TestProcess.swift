import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A real child process of a test, with its output in a log file. Tests stop every one they
/// start (``Cluster`` does it on every exit path).
final class TestProcess: Sendable {
    let name: String
    let logPath: String
    let pid: Int32
    private let process: Mutex<Process>

    /// Starts `arguments` of the built `vps-gateway` with exactly `environment` (plus PATH).
    /// A `launcher` (like `["/bin/sh", "-c", "ulimit -f 100; exec \"$0\" \"$@\""]`) runs
    /// first and gets the binary and its arguments after its own.
    init(name: String, arguments: [String], environment: [String: String], logPath: String, launcher: [String] = []) throws {
        let process = Process()
        if let first = launcher.first {
            process.executableURL = URL(fileURLWithPath: first)
            process.arguments = Array(launcher.dropFirst()) + [TestBinary.path] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: TestBinary.path)
            process.arguments = arguments
        }
        var env = environment
        env["PATH"] = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        env["SWIFT_BACKTRACE"] = "enable=no"
        process.environment = env
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try log.close()
        self.name = name
        self.logPath = logPath
        self.pid = process.processIdentifier
        self.process = Mutex(process)
    }

    var isRunning: Bool { process.withLock { $0.isRunning } }

    func signal(_ signal: Int32) {
        if isRunning { kill(pid, signal) }
    }

    /// Waits for the exit (polling with a time limit) and returns the exit status, or nil
    /// when it is still running after `timeout`.
    @discardableResult
    func waitForExit(timeout: Duration = .seconds(10)) async -> Int32? {
        let exited = await poll(timeout: timeout) { !self.isRunning }
        guard exited else { return nil }
        return process.withLock { $0.terminationStatus }
    }

    /// SIGKILL and wait; used by cleanup so nothing outlives its test.
    func stop() async {
        signal(SIGKILL)
        await waitForExit(timeout: .seconds(5))
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
}

/// Where `swift build` put the binary under test (next to the test bundle).
enum TestBinary {
    static let path: String = {
        if let override = ProcessInfo.processInfo.environment["VPS_GATEWAY_BIN"] { return override }
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("vps-gateway").path
    }()
}

/// Re-checks `condition` every 20 ms until it holds or `timeout` passes.
func poll(timeout: Duration, _ condition: @Sendable () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return await condition()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    precondition(fd >= 0, "socket() failed")
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    precondition(bound, "bind() to 127.0.0.1:0 failed")
    return Int(UInt16(bigEndian: address.sin_port))
}
