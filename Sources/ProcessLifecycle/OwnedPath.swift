#if canImport(Glibc)
import Glibc
#endif

/// A file or socket this process created, known by its device, inode and change time, so
/// that removing it at exit never removes a successor's: a process that is still stopping
/// when its replacement has already bound the same path leaves the new one alone. (The change
/// time tells a new file from an old one whose freed inode number was reused; claim the path
/// after the last chmod.)
///
/// ```swift
/// let socket = OwnedPath(claiming: path)   // right after bind()
/// defer { socket?.removeIfOwned() }
/// ```
public struct OwnedPath: Sendable, Equatable {
    public let path: String
    private let identity: Identity

    private struct Identity: Sendable, Equatable {
        var device: UInt64
        var inode: UInt64
        var changed: timespec

        static func == (a: Identity, b: Identity) -> Bool {
            a.device == b.device && a.inode == b.inode && a.changed.tv_sec == b.changed.tv_sec && a.changed.tv_nsec == b.changed.tv_nsec
        }
    }

    /// Records what is at `path` now; nil when nothing is there.
    public init?(claiming path: String) {
        guard let identity = Self.identity(of: path) else { return nil }
        self.path = path
        self.identity = identity
    }

    /// True while `path` is still the file this value claimed.
    public var isOwned: Bool {
        Self.identity(of: path) == identity
    }

    /// Unlinks `path` if it is still the claimed file; true when it removed it.
    @discardableResult
    public func removeIfOwned() -> Bool {
        isOwned && unlink(path) == 0
    }

    private static func identity(of path: String) -> Identity? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return Identity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino), changed: info.st_ctim)
    }
}
