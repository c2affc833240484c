import NIOCore
import Synchronization

/// The connections a server has accepted and not yet closed. A graceful shutdown sends
/// GOAWAY and waits for each peer to close; a silent, half-open or stopped peer never does,
/// and the transport then waits forever (cancelling it does not close such a connection
/// either). At the end of the grace the gateway closes what is left itself.
final class OpenConnections: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    /// For the transport's accept callback: tracks `channel` until it closes.
    func track(_ channel: any Channel) -> EventLoopFuture<Void> {
        let id = ObjectIdentifier(channel)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { _ in
            _ = self.channels.withLock { $0.removeValue(forKey: id) }
        }
        return channel.eventLoop.makeSucceededVoidFuture()
    }

    var count: Int { channels.withLock { $0.count } }

    /// Closes every connection still open; returns how many there were.
    @discardableResult
    func closeAll() -> Int {
        let open = channels.withLock { Array($0.values) }
        for channel in open { channel.close(promise: nil) }
        return open.count
    }
}
