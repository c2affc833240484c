import Foundation
import ProcessLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// Checks around the admin socket's path before the server binds it: one gateway per socket
/// (a lock), and a live socket of another gateway is never deleted.
enum AdminSocket {
    /// Takes `PATH.lock`: one gateway per admin socket. A second one is refused, naming the
    /// first one's pid, before it touches the socket.
    static func lock(path: String) throws -> InstanceLock {
        do {
            return try InstanceLock(path: path + ".lock")
        } catch where error.code == .alreadyRunning {
            throw GatewayError(
                code: .alreadyRunning,
                message: "another gateway (\(error.holderDescription)) serves the admin socket '\(path)'; stop it (under systemd: systemctl stop vps-gateway), or give this one another --admin-socket"
            )
        } catch {
            throw GatewayError(code: .adminSocketFailed, message: error.message)
        }
    }

    /// Creates the parent directory and refuses a path that is in use or not a socket.
    static func prepare(path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory.isEmpty ? "." : directory, withIntermediateDirectories: true)
        } catch {
            throw GatewayError(
                code: .adminSocketFailed,
                message: "cannot create the admin socket's directory '\(directory)'; create it or choose another --admin-socket",
                cause: error
            )
        }
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw GatewayError(
                code: .adminSocketFailed,
                message: "'\(path)' exists and is not a socket; remove it or choose another --admin-socket"
            )
        }
        if isAcceptingConnections(path) {
            throw GatewayError(
                code: .adminSocketFailed,
                message: "'\(path)' is in use: another gateway is serving its admin API there; stop it or choose another --admin-socket"
            )
        }
        unlink(path)  // a stale socket of a gateway that died
    }

    private static func isAcceptingConnections(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.prefix(buffer.count - 1).enumerated() { buffer[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return result == 0
    }
}
