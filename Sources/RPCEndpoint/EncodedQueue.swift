import AsyncPrimitives

/// A ``MessageQueue`` seen as the bytes of its messages: what a stream written from its
/// connection's event loop (``MessageQueue/whenReady(_:)``) or by a task
/// (``MessageQueue/nextBatch()``) takes from it, whatever the message type.
struct EncodedQueue: Sendable {
    private let take: @Sendable () -> [[UInt8]]?
    private let next: @Sendable () async -> [[UInt8]]?
    private let finished: @Sendable () -> Bool
    private let ready: @Sendable (@escaping @Sendable () -> Void) -> Void
    private let close: @Sendable () -> Void

    init<Element: Sendable>(_ queue: MessageQueue<Element>, encode: @escaping @Sendable (Element) throws -> [UInt8]) {
        // A message that cannot be encoded is dropped, not the stream (protobuf encoding of
        // a built message does not fail in practice).
        take = { queue.takeBatch().map { batch in batch.compactMap { try? encode($0) } } }
        next = { await queue.nextBatch().map { batch in batch.compactMap { try? encode($0) } } }
        finished = { queue.isFinished }
        ready = { queue.whenReady($0) }
        close = { queue.finish() }
    }

    /// Everything queued now, encoded; nil when nothing is.
    func takeBatch() -> [[UInt8]]? { take() }
    /// The next batch, waiting for one; nil once the queue is finished and empty.
    func nextBatch() async -> [[UInt8]]? { await next() }
    var isFinished: Bool { finished() }
    func whenReady(_ wake: @escaping @Sendable () -> Void) { ready(wake) }
    /// No more messages: what is queued still goes out.
    func finish() { close() }
}
