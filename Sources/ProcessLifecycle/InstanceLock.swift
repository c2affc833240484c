#if canImport(Glibc)
import Glibc
#endif

/// An exclusive `flock` on a lock file, held until the process exits: the way a gateway, a
/// worker or a supervisor makes sure it is the only one on its paths.
///
/// The kernel drops the lock when the holder dies, even by SIGKILL, so a stale lock file
/// never blocks a restart. The file holds the holder's pid for the refusal message; it is
/// never deleted (unlinking a lock file lets a waiter lock an orphaned inode). The
/// descriptor is close-on-exec, so no child (nor a crash reporter) inherits the lock.
///
/// ```swift
/// let lock = try InstanceLock(path: "/run/vps-gateway/admin.sock.lock")
/// // ... run; the lock is released when `lock` is released or the process ends.
/// ```
public final class InstanceLock: Sendable {
    public let path: String
    private let fd: Int32

    /// Takes the lock without waiting. Throws `alreadyRunning` (with the holder's pid) when
    /// another process holds it, `lockFailed` when the file cannot be opened.
    public init(path: String) throws(LifecycleError) {
        self.path = path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else {
            let error = errno
            throw LifecycleError(
                code: .lockFailed,
                message: "cannot open the lock file '\(path)': \(String(cString: strerror(error))) (errno \(error)); check that its directory exists and is writable"
            )
        }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let error = errno
            if error == EINTR { continue }
            let holder = Self.readHolder(fd)
            close(fd)
            if error == EWOULDBLOCK {
                throw LifecycleError(
                    code: .alreadyRunning,
                    message: "'\(path)' is locked by \(holder.map { "pid \($0)" } ?? "another process")",
                    holder: holder
                )
            }
            throw LifecycleError(code: .lockFailed, message: "flock(\(path)) failed: \(String(cString: strerror(error))) (errno \(error))")
        }
        self.fd = fd
        let text = Array("\(getpid())\n".utf8)
        if ftruncate(fd, 0) == 0 { _ = pwrite(fd, text, text.count, 0) }
    }

    deinit { close(fd) }

    private static func readHolder(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = pread(fd, &buffer, buffer.count, 0)
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self).split(separator: "\n").first ?? ""
        return Int32(text)
    }
}
