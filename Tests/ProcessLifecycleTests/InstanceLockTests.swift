import Foundation
import ProcessLifecycle
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Locks and owned paths on real files in a temp directory. `flock` locks belong to an open
/// file description, so a second `InstanceLock` in the same process conflicts exactly as a
/// second process would.
///
/// A class, so each test's directory goes with its instance (Swift Testing makes one per
/// test): a removal in each test left behind the directories of tests that had none.
@Suite("Instance locks and owned paths")
final class InstanceLockTests {
    let directory: String

    init() throws {
        directory = NSTemporaryDirectory() + "vpsgw-lock-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test("a second lock on the same file is refused and names the holder's pid; after release it is free again")
    func secondLockRefused() throws {
        let path = directory + "/a.lock"
        var first: InstanceLock? = try InstanceLock(path: path)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "\(getpid())\n")
        #expect(throws: LifecycleError.self) { try InstanceLock(path: path) }
        do {
            _ = try InstanceLock(path: path)
        } catch {
            #expect(error.code == .alreadyRunning)
            #expect(error.holder == getpid())
            #expect(error.message.contains("pid \(getpid())"))
        }
        _ = first
        first = nil
        _ = try InstanceLock(path: path)
    }

    @Test("a lock file in a directory that does not exist fails with lockFailed, naming the path")
    func missingDirectory() {
        do {
            _ = try InstanceLock(path: directory + "/missing/b.lock")
            Issue.record("expected a failure")
        } catch {
            #expect(error.code == .lockFailed)
            #expect(error.message.contains("/missing/b.lock"))
        }
    }

    @Test("an owned path is removed only while it is the same file; a successor's file at the path stays")
    func ownedPathLeavesSuccessor() throws {
        let path = directory + "/socket"
        #expect(OwnedPath(claiming: path) == nil)
        _ = FileManager.default.createFile(atPath: path, contents: Data("first".utf8))
        let first = try #require(OwnedPath(claiming: path))
        #expect(first.isOwned)
        // A successor replaces the file (as a restarted gateway re-binds its socket).
        unlink(path)
        _ = FileManager.default.createFile(atPath: path, contents: Data("second".utf8))
        #expect(!first.isOwned)
        #expect(!first.removeIfOwned())
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "second")
        let second = try #require(OwnedPath(claiming: path))
        #expect(second.removeIfOwned())
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
