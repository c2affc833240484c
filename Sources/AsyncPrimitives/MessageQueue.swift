import Synchronization

/// A bounded queue between many senders and the one task that writes a stream.
///
/// Senders never wait: ``enqueue(_:)`` refuses when the queue is full or finished, so a peer
/// that stops reading only hurts its own messages. The writer takes everything queued at
/// once (``nextBatch()``) and writes it with one call, which under load saves a task switch
/// and a flush per message compared with an `AsyncStream`.
public final class MessageQueue<Element: Sendable>: Sendable {
    private let capacity: Int
    private let state = Mutex(State())

    private struct State {
        var buffer: [Element] = []
        var finished = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    /// - Parameter capacity: how many messages may wait; `Int.max` for no bound.
    public init(capacity: Int) {
        precondition(capacity > 0, "a message queue needs room for at least one message")
        self.capacity = capacity
    }

    /// Queues `element`; false when the queue is full or finished.
    @discardableResult
    public func enqueue(_ element: Element) -> Bool {
        let (accepted, waiter) = state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?) in
            guard !state.finished, state.buffer.count < capacity else { return (false, nil) }
            state.buffer.append(element)
            defer { state.waiter = nil }
            return (true, state.waiter)
        }
        waiter?.resume()
        return accepted
    }

    /// No more messages: the writer gets what is queued, then nil.
    public func finish() {
        let waiter = state.withLock { state in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    public var isFinished: Bool { state.withLock { $0.finished } }

    /// Everything queued, waiting for at least one message; nil once finished and empty, or
    /// when the waiting task is cancelled. One consumer only.
    public func nextBatch() async -> [Element]? {
        while true {
            if Task.isCancelled { return nil }
            let batch = state.withLock { state -> [Element]? in
                guard !state.buffer.isEmpty else { return nil }
                defer { state.buffer.removeAll(keepingCapacity: true) }
                return state.buffer
            }
            if let batch { return batch }
            if isFinished { return nil }
            await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let resumeNow = state.withLock { state in
                        if !state.buffer.isEmpty || state.finished || Task.isCancelled { return true }
                        state.waiter = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: {
                state.withLock { state in
                    defer { state.waiter = nil }
                    return state.waiter
                }?.resume()
            }
        }
    }
}
