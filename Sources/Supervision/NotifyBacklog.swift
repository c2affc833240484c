/// How many of each child's notify messages wait for the supervisor's loop, bounded: past
/// `limit` unhandled messages of one child, its further ones are dropped (the loop handles
/// one in microseconds, so only a child sending in a tight loop gets there), and once its
/// backlog is handled the count of dropped ones is told, to be logged.
struct NotifyBacklog<Child: Hashable> {
    enum Admission: Equatable {
        case queue
        /// The first message dropped since the backlog last emptied: worth a log line.
        case dropFirst(limit: Int)
        case drop
    }

    let limit: Int
    private var children: [Child: (queued: Int, dropped: Int)] = [:]

    init(limit: Int) {
        precondition(limit > 0, "a notify backlog needs room for one message")
        self.limit = limit
    }

    /// A message arrived from `child`.
    mutating func admit(_ child: Child) -> Admission {
        var entry = children[child] ?? (0, 0)
        defer { children[child] = entry }
        guard entry.queued < limit else {
            entry.dropped += 1
            return entry.dropped == 1 ? .dropFirst(limit: limit) : .drop
        }
        entry.queued += 1
        return .queue
    }

    /// One queued message of `child` was handled. Returns how many were dropped once its
    /// backlog is empty and some were; nil otherwise.
    mutating func handled(_ child: Child) -> Int? {
        guard var entry = children[child] else { return nil }
        entry.queued -= 1
        guard entry.queued <= 0 else {
            children[child] = entry
            return nil
        }
        children[child] = nil
        return entry.dropped > 0 ? entry.dropped : nil
    }

    /// Children with messages waiting (a child's entry goes once its backlog is handled).
    var waiting: Int { children.count }
}
