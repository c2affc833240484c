import Synchronization

/// A bounded queue between many senders and the one consumer that writes a stream.
///
/// Senders never wait: ``enqueue(_:)`` refuses when the queue is full or finished, so a peer
/// that stops reading only hurts its own messages. The consumer takes everything queued at
/// once and writes it with one call, which under load saves a task switch and a flush per
/// message compared with an `AsyncStream`. It is either a task awaiting ``nextBatch()``, or
/// an event loop that takes batches with ``takeBatch()`` and asks to be told of the next one
/// with ``whenReady(_:)``: a stream written from its connection's loop that way costs no task
/// hop per message.
public final class MessageQueue<Element: Sendable>: Sendable {
    private let capacity: Int
    private let state = Mutex(State())

    private struct State {
        var buffer: [Element] = []
        var finished = false
        var waiter: CheckedContinuation<Void, Never>?
        /// The consumer's one-shot wake-up (``whenReady(_:)``); in the state struct, not bare
        /// in the mutex, so no `withLock` re-wraps it.
        var ready: (@Sendable () -> Void)?
    }

    /// - Parameter capacity: how many messages may wait; `Int.max` for no bound.
    public init(capacity: Int) {
        precondition(capacity > 0, "a message queue needs room for at least one message")
        self.capacity = capacity
    }

    /// Queues `element`; false when the queue is full or finished.
    @discardableResult
    public func enqueue(_ element: Element) -> Bool {
        let (accepted, waiter, ready) = state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?, (@Sendable () -> Void)?) in
            guard !state.finished, state.buffer.count < capacity else { return (false, nil, nil) }
            state.buffer.append(element)
            defer { (state.waiter, state.ready) = (nil, nil) }
            return (true, state.waiter, state.ready)
        }
        waiter?.resume()
        ready?()
        return accepted
    }

    /// No more messages: the writer gets what is queued, then nil.
    public func finish() {
        let (waiter, ready) = state.withLock { state in
            state.finished = true
            defer { (state.waiter, state.ready) = (nil, nil) }
            return (state.waiter, state.ready)
        }
        waiter?.resume()
        ready?()
    }

    /// Everything queued now, without waiting; nil when nothing is.
    public func takeBatch() -> [Element]? {
        state.withLock { state in
            guard !state.buffer.isEmpty else { return nil }
            defer { state.buffer.removeAll(keepingCapacity: true) }
            return state.buffer
        }
    }

    /// Calls `wake` once, from the thread that makes it so, when there is a batch to take or
    /// the queue has finished; at once when that is already the case. For a consumer that
    /// is not a task (an event loop): it takes what is there, then asks again. A later call
    /// replaces a wake that has not fired (one consumer only).
    public func whenReady(_ wake: @escaping @Sendable () -> Void) {
        let now = state.withLock { state in
            if !state.buffer.isEmpty || state.finished { return true }
            state.ready = wake
            return false
        }
        if now { wake() }
    }

    public var isFinished: Bool { state.withLock { $0.finished } }

    /// Everything queued, waiting for at least one message; nil once finished and empty, or
    /// when the waiting task is cancelled. One consumer only.
    public func nextBatch() async -> [Element]? {
        while true {
            if Task.isCancelled { return nil }
            if let batch = takeBatch() { return batch }
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
