import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A real child process of a test, with its output in a log file. Tests stop every one they
/// start (``Cluster`` does it on every exit path).
///
/// Spawned with posix_spawn and reaped with a non-blocking waitpid: Foundation's `Process`
/// sometimes never noticed a child that exited, which turned finished commands into timeouts.
final class TestProcess: Sendable {
    let name: String
    let logPath: String
    let pid: pid_t
    /// The raw wait status once reaped.
    private let status = Mutex<Int32?>(nil)

    /// Starts `arguments` of the built `vps-gateway` with exactly `environment` (plus PATH).
    /// A `launcher` (like `["/bin/sh", "-c", "ulimit -f 100; exec \"$0\" \"$@\""]`) runs
    /// first and gets the binary and its arguments after its own; an `executable` runs
    /// another program altogether with `arguments` as its own.
    /// The Swift runtime's crash reporter is off (it takes seconds per crash) unless the
    /// test asks for the product's own setting with `crashReporter`.
    init(name: String, arguments: [String], environment: [String: String], logPath: String, launcher: [String] = [], executable: String? = nil, crashReporter: Bool = false) throws {
        let argv = launcher + [executable ?? TestBinary.path] + arguments
        var env = environment
        env["PATH"] = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        if !crashReporter { env["SWIFT_BACKTRACE"] = "enable=no" }
        self.name = name
        self.logPath = logPath
        self.pid = try Self.spawn(argv, environment: env.map { "\($0.key)=\($0.value)" }, output: logPath)
    }

    private static func spawn(_ argv: [String], environment: [String], output: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cArguments = argv.map { strdup($0) } + [nil]
        let cEnvironment = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in cArguments { free(pointer) }
            for pointer in cEnvironment { free(pointer) }
        }
        // The spawning thread may be a Dispatch worker with most signals blocked; a child
        // inherits that mask, and a dnsmasq that cannot see SIGHUP never reloads. Start every
        // child with no signal blocked and default dispositions.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let result = posix_spawn(&pid, argv[0], &actions, &attributes, cArguments, cEnvironment)
        guard result == 0 else {
            throw ClusterError("cannot start \(argv[0]): \(String(cString: strerror(result)))")
        }
        return pid
    }

    /// Reaps the child if it has exited (never blocks).
    private func reap() -> Int32? {
        status.withLock { status in
            if let status { return status }
            var raw: Int32 = 0
            if waitpid(pid, &raw, WNOHANG) == pid { status = raw }
            return status
        }
    }

    var isRunning: Bool { reap() == nil }

    func signal(_ signal: Int32) {
        if isRunning { kill(pid, signal) }
    }

    /// Waits for the exit (polling with a time limit) and returns the exit code (128 + the
    /// signal for a signalled child), or nil when it is still running after `timeout`.
    @discardableResult
    func waitForExit(timeout: Duration = .seconds(10)) async -> Int32? {
        let exited = await poll(timeout: timeout) { !self.isRunning }
        guard exited, let raw = reap() else { return nil }
        return raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
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

/// One process as /proc shows it.
struct ProcessEntry: Sendable {
    var pid: pid_t
    var parent: pid_t
    var group: pid_t
    /// `R`, `S`, `T`, `Z`, … (a zombie waits for its reaper).
    var state: Character
    /// The arguments joined by spaces; empty for a zombie or a kernel thread.
    var command: String

    var isAlive: Bool { state != "Z" }
}

/// The fields of a `/proc/…/stat` file from field 3 (the state) on: `statFields(path)[n - 3]`
/// is field n of proc(5). Nil when the file is gone. The file is `pid (comm) state ppid …`,
/// and the name may hold spaces and parentheses, so the fields are read after the last ')'.
func statFields(_ path: String) -> [Substring]? {
    guard let stat = FileManager.default.contents(atPath: path) else { return nil }
    let text = String(decoding: stat, as: UTF8.self)
    guard let close = text.lastIndex(of: ")") else { return nil }
    return text[text.index(after: close)...].split(separator: " ")
}

/// Every process on the machine, from /proc (entries that vanish while reading are skipped).
func processTable() -> [ProcessEntry] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { entry in
        guard let pid = pid_t(entry), let fields = statFields("/proc/\(entry)/stat") else { return nil }
        guard fields.count > 2, let state = fields[0].first, let parent = pid_t(fields[1]), let group = pid_t(fields[2]) else { return nil }
        let arguments = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") ?? Data()
        let command = String(decoding: arguments.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
        return ProcessEntry(pid: pid, parent: parent, group: group, state: state, command: command)
    }
}

/// Live processes (not this one) whose command line contains `text`.
func processes(commandLineContaining text: String) -> [ProcessEntry] {
    processTable().filter { $0.isAlive && $0.pid != getpid() && $0.command.contains(text) }
}

/// Live processes of process group `group` (a crash reporter shares its crashed process's group).
func processes(inGroup group: pid_t) -> [ProcessEntry] {
    processTable().filter { $0.isAlive && $0.group == group }
}

/// What each thread of `pid` is doing, for a failure message: name, state (`D` is a wait the
/// kernel does not interrupt, even for SIGKILL), the kernel function it waits in and its
/// system call.
func threadStates(of pid: pid_t) -> String {
    guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else {
        return "no /proc entry for pid \(pid)"
    }
    func read(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "?").trimmingCharacters(in: .whitespacesAndNewlines)
    }
    return tasks.sorted().map { tid in
        let base = "/proc/\(pid)/task/\(tid)"
        let state = statFields("\(base)/stat")?.first ?? "?"
        let syscall = read("\(base)/syscall").split(separator: " ").first ?? "?"
        return "\(tid) \(read("\(base)/comm")) state=\(state) wchan=\(read("\(base)/wchan")) syscall=\(syscall)"
    }.joined(separator: "; ")
}

/// True while `pid` is a live process.
func isAlive(_ pid: pid_t) -> Bool {
    processTable().contains { $0.pid == pid && $0.isAlive }
}

/// The first live process matching `condition` within `timeout`.
func firstProcess(within timeout: Duration, _ condition: @escaping @Sendable (ProcessEntry) -> Bool) async -> ProcessEntry? {
    let found = Mutex<ProcessEntry?>(nil)
    _ = await poll(timeout: timeout) {
        guard let match = processTable().first(where: { $0.isAlive && condition($0) }) else { return false }
        found.withLock { $0 = match }
        return true
    }
    return found.withLock { $0 }
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

/// Reserves a TCP port on 127.0.0.1 for one test: returns it with the socket that holds it,
/// which the caller closes when the test ends.
///
/// Not from the kernel's ephemeral range (`bind` to port 0 takes from it, and so does every
/// outgoing connection on the machine, a worker's or another suite's): a port from there can
/// be taken whenever the test's own listener is not bound to it. Below that range only
/// listeners that chose their port take one, and a random pick makes two suites on one
/// machine unlikely to choose alike.
///
/// Unlikely is not never: CI once saw a gateway fail to bind a port picked this way a moment
/// before. So the port stays held by a socket bound to it, not listening, until the test
/// ends. Anything that binds without SO_REUSEADDR (another suite's pick, among others) is
/// refused it, also while a test restarts its gateway; the product's listeners and
/// PostgreSQL set SO_REUSEADDR and bind and listen beside the holder. The holder binds before
/// it sets SO_REUSEADDR, so the pick refuses a port that anything holds, a connection in
/// TIME_WAIT included.
func reserveLoopbackPort() throws -> (port: Int, holder: Int32) {
    let ephemeralLow = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
        .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32768
    let range = 20000..<max(20000 + 4096, min(ephemeralLow, 65536))
    for _ in 0..<512 {
        let port = Int.random(in: range)
        guard handedOutPorts.withLock({ $0.insert(port).inserted }) else { continue }
        if let holder = holdingSocket(port: port) { return (port, holder) }
    }
    throw ClusterError("no free TCP port on 127.0.0.1 in \(range) after 512 tries")
}

private let handedOutPorts = Mutex<Set<Int>>([])

/// A socket bound to 127.0.0.1:`port` (without SO_REUSEADDR, so a port with connections in
/// TIME_WAIT counts as taken) that then lets SO_REUSEADDR listeners share the port; nil when
/// the port is taken.
private func holdingSocket(port: Int) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    var one: Int32 = 1
    guard bound, setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
        close(fd)
        return nil
    }
    return fd
}
