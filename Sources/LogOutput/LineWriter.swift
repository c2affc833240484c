import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Writes log lines to a file descriptor whole and in order. Lines logged on an event loop
/// are kept until the end of that loop turn and written together; lines from any other
/// thread are written at once (after whatever is kept, to keep the order).
///
/// Every call and every worker request logs one audit line, and each was a `write(2)` of its
/// own: writing a turn's lines together gave about 5 % more calls/s at 3 workers, c=64,
/// journal off (the README's "The hot path"). A loop turn that
/// answers many calls now writes their lines in one call, in the same turn that flushes
/// their answers: a crash in the middle of a turn loses that turn's lines and its answers
/// alike, no more. Lines still kept when the process calls `exit` are written by an `atexit`
/// handler.
final class LineWriter: Sendable {
    /// Kept lines past this size are written at once, inside the turn.
    static let keptBytesLimit = 64 * 1024

    private struct State {
        var kept: [UInt8] = []
        var flushScheduled = false
    }

    private let descriptor: Int32
    private let state = Mutex(State())

    init(descriptor: Int32) {
        self.descriptor = descriptor
    }

    /// The process's standard error.
    static let standardError: LineWriter = {
        let writer = LineWriter(descriptor: 2)
        atexit { LineWriter.standardError.flush() }
        return writer
    }()

    /// Writes `line` (with its newline) now, or at the end of the current loop turn when
    /// called on an event loop.
    func emit(_ line: [UInt8]) {
        let loop = MultiThreadedEventLoopGroup.currentEventLoop
        let scheduleOn: (any EventLoop)? = state.withLock { state in
            state.kept += line
            guard let loop else {
                writeKept(&state)
                return nil
            }
            if state.kept.count >= Self.keptBytesLimit { writeKept(&state) }
            guard !state.flushScheduled else { return nil }
            state.flushScheduled = true
            return loop
        }
        scheduleOn?.execute { self.flush() }
    }

    /// Bytes kept for the end of a loop turn (for the tests).
    var keptBytes: Int { state.withLock { $0.kept.count } }

    /// Writes what is kept.
    func flush() {
        state.withLock { state in
            state.flushScheduled = false
            writeKept(&state)
        }
    }

    private func writeKept(_ state: inout State) {
        guard !state.kept.isEmpty else { return }
        write(state.kept)
        state.kept.removeAll(keepingCapacity: true)
    }

    /// Under the lock, so concurrent writers never interleave.
    private func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Foundation.write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return  // the descriptor is gone; nothing sensible to report it to
                }
                offset += written
            }
        }
    }
}
