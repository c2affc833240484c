import NIOCore
import Synchronization

/// The connections a server has open: admitted up to a cap, told to quiesce (GOAWAY) on a
/// graceful shutdown, and cut when they outlast it (a silent, half-open or stopped peer never
/// closes its side).
final class ConnectionRegistry: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])
    let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// Tracks `channel` until it closes; false (not tracked) when the cap is reached.
    func admit(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let admitted = channels.withLock { channels in
            guard channels.count < limit else { return false }
            channels[id] = channel
            return true
        }
        if admitted {
            channel.closeFuture.whenComplete { _ in
                _ = self.channels.withLock { $0.removeValue(forKey: id) }
            }
        }
        return admitted
    }

    var count: Int { channels.withLock { $0.count } }

    /// Asks every connection to close once its streams are done (the HTTP/2 connection
    /// manager sends GOAWAY).
    func quiesceAll() {
        for channel in channels.withLock({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }

    /// Closes every connection now; returns how many were open.
    @discardableResult
    func closeAll() -> Int {
        let open = channels.withLock { Array($0.values) }
        for channel in open { channel.close(promise: nil) }
        return open.count
    }
}
