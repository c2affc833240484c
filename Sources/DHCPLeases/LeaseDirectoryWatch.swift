import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// inotify on the lease file's directory, and on its parent for that directory's own name, so
/// a directory moved away and re-created (a package upgrade, a restore, `mv` by hand) is
/// noticed and watched again instead of leaving the old inode's watch silent until the next
/// timed reconcile.
final class LeaseDirectoryWatch: Sendable {
    /// The inotify descriptor; its reader owns it once handed over.
    let descriptor: Int32
    let directory: String
    private let parent: String
    private let name: [UInt8]
    private let watched: Mutex<Watched>

    private struct Watched {
        var directoryWD: Int32 = -1
        var parentWD: Int32 = -1
        /// The directory inode the watch is on; nil while there is no directory.
        var identity: FileIdentity?
        var everWatched = false
        var lastFailure: Int32 = 0
    }

    struct FileIdentity: Equatable, Sendable {
        var device: UInt64
        var inode: UInt64
    }

    /// What a batch of events means to the lease watcher.
    struct Events: Equatable {
        /// Something in the watched directory changed: reconcile.
        var leasesMayHaveChanged = false
        /// The directory itself was moved, deleted or (re)created: check and re-arm.
        var directoryMayHaveChanged = false
    }

    /// What ``rearm()`` found; each case but `unchanged` is reported once, when it happens.
    enum Rearm: Equatable {
        case unchanged
        /// Watched for the first time.
        case armed
        /// The directory at the path is not the one watched before; now it is.
        case rearmed
        /// The watched directory is gone; watched again once the parent shows a new one.
        case vanished
        case failed(errno: Int32)
    }

    private static let directoryMask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MODIFY | IN_MOVED_FROM)
        | UInt32(IN_DELETE_SELF | IN_MOVE_SELF)
    private static let parentMask = UInt32(IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ONLYDIR)

    /// nil when inotify is unavailable (errno says why).
    init?(directory: String) {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { return nil }
        self.descriptor = fd
        self.directory = directory
        let trimmed = directory.count > 1 && directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        if let slash = trimmed.lastIndex(of: "/") {
            let parent = String(trimmed[..<slash])
            self.parent = parent.isEmpty ? "/" : parent
            self.name = Array(trimmed[trimmed.index(after: slash)...].utf8)
        } else {
            self.parent = "."
            self.name = Array(trimmed.utf8)
        }
        self.watched = Mutex(Watched())
        watched.withLock { $0.parentWD = inotify_add_watch(fd, self.parent, Self.parentMask) }
    }

    /// Watches whatever directory is at the path now, if it is not the one already watched.
    func rearm() -> Rearm {
        watched.withLock { watched in
            var info = stat()
            guard stat(directory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
                let error = stat(directory, &info) == 0 ? ENOTDIR : errno
                let wasWatched = watched.directoryWD >= 0
                if wasWatched {
                    inotify_rm_watch(descriptor, watched.directoryWD)
                    watched.directoryWD = -1
                }
                watched.identity = nil
                if error == ENOENT { return wasWatched ? .vanished : .unchanged }
                return report(error, &watched)
            }
            let identity = FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
            if identity == watched.identity && watched.directoryWD >= 0 { return .unchanged }
            // A new watch descriptor for the new inode; the old one would report on a
            // directory nobody writes to any more.
            let wd = inotify_add_watch(descriptor, directory, Self.directoryMask)
            guard wd >= 0 else { return report(errno, &watched) }
            if watched.directoryWD >= 0 && watched.directoryWD != wd { inotify_rm_watch(descriptor, watched.directoryWD) }
            watched.directoryWD = wd
            watched.identity = identity
            watched.lastFailure = 0
            defer { watched.everWatched = true }
            return watched.everWatched ? .rearmed : .armed
        }
    }

    private func report(_ error: Int32, _ watched: inout Watched) -> Rearm {
        guard error != watched.lastFailure else { return .unchanged }
        watched.lastFailure = error
        return .failed(errno: error)
    }

    /// Reads a buffer of `struct inotify_event`s (the kernel returns whole events per read).
    func classify(_ bytes: some Collection<UInt8>) -> Events {
        let bytes = Array(bytes)
        let (directoryWD, parentWD) = watched.withLock { ($0.directoryWD, $0.parentWD) }
        var events = Events()
        var offset = 0
        let header = MemoryLayout<inotify_event>.size
        while offset + header <= bytes.count {
            let (wd, mask, length) = bytes.withUnsafeBytes { raw in
                (raw.loadUnaligned(fromByteOffset: offset, as: Int32.self),
                 raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self),
                 Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self)))
            }
            let nameStart = offset + header
            let nameEnd = min(bytes.count, nameStart + length)
            let eventName = bytes[nameStart..<nameEnd].prefix { $0 != 0 }
            offset = nameEnd
            if wd == directoryWD {
                if mask & UInt32(IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED) != 0 {
                    events.directoryMayHaveChanged = true
                } else {
                    events.leasesMayHaveChanged = true
                }
            } else if wd == parentWD, eventName.elementsEqual(name) {
                events.directoryMayHaveChanged = true
            } else if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                events.leasesMayHaveChanged = true
                events.directoryMayHaveChanged = true
            }
        }
        return events
    }
}
