import Foundation
import Subprocess
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One run of a child: spawned with swift-subprocess in a process group of its own, its
/// stderr shared with the supervisor (so under systemd it lands in the journal stream), its
/// stdout forwarded. The run ends when the child exits; the supervisor signals it through
/// ``signal(_:)`` meanwhile.
///
/// The process group is what makes a crash complete: a child that aborts starts the Swift
/// runtime's crash reporter (`swift-backtrace`), which inherits every descriptor the child
/// held (NIO's sockets are not close-on-exec) and can outlive it for minutes, keeping the
/// listening port and the admin socket from its restart. SIGKILL goes to the whole group,
/// and whatever is left of the group when the child has exited is killed before the run
/// ends, so a restart always finds the child's sockets released.
final class ChildProcess: Sendable {
    private let pid = Mutex<pid_t?>(nil)

    var processID: pid_t? { pid.withLock { $0 } }

    /// Sends `signal` if the child is running (SIGKILL to its whole process group); false
    /// otherwise.
    @discardableResult
    func signal(_ signal: Int32) -> Bool {
        pid.withLock { pid in
            // Under the lock: the pid is cleared before the child is reaped, so it cannot
            // belong to another process yet.
            guard let pid else { return false }
            return kill(signal == SIGKILL ? -pid : pid, signal) == 0
        }
    }

    /// Runs `spec` to its end; returns how it ended.
    func run(_ spec: ChildSpec, started: @Sendable (pid_t) -> Void) async throws -> TerminationStatus {
        let lifeline = spec.arguments + ["--lifeline-stdin"]
        let environment = Environment.custom(Dictionary(uniqueKeysWithValues: spec.environment.map { (Environment.Key(stringLiteral: $0.key), $0.value) }))
        var options = PlatformOptions()
        // A group of its own, led by the child (its pid is the group id).
        options.processGroupID = 0
        let spawned = Mutex<pid_t?>(nil)
        defer {
            // What is left of the group (a crash reporter, a helper it started) goes with it.
            if let group = spawned.withLock({ $0 }) { kill(-group, SIGKILL) }
        }
        let result = try await Subprocess.run(
            .path(FilePath(spec.executable)),
            arguments: Arguments(lifeline),
            environment: environment,
            platformOptions: options,
            // The child's stdin is a pipe we never write to: when this process dies, the kernel
            // closes it and the child (run with --lifeline-stdin) shuts down.
            input: .inputWriter,
            output: .sequence,
            error: .currentStandardError
        ) { execution in
            self.pid.withLock { $0 = execution.processIdentifier.value }
            spawned.withLock { $0 = execution.processIdentifier.value }
            started(execution.processIdentifier.value)
            // The child's stdout closes when it exits: forwarding it to the end is waiting for
            // the exit, without polling.
            do {
                for try await chunk in execution.standardOutput {
                    chunk.withUnsafeBytes { bytes in _ = write(1, bytes.baseAddress, bytes.count) }
                }
            } catch {}
            self.pid.withLock { $0 = nil }
        }
        return result.terminationStatus
    }
}
