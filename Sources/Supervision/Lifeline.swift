import NIOCore
import NIOPosix
// Public: the lifeline is a Service beside the role it guards.
public import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// Ends a child with its supervisor: the supervisor holds the write end of the child's stdin
/// pipe, and when the supervisor dies (even by SIGKILL) the kernel closes it; this service
/// then sees end-of-file and returns, which shuts the role down gracefully. No polling of the
/// parent pid, and no `PR_SET_PDEATHSIG` (tied to the spawning thread, not the process).
public struct StdinLifeline: Service {
    public init() {}

    public func run() async throws {
        let fd = dup(0)
        guard fd >= 0 else { return }
        let channel = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .takingOwnershipOfDescriptor(input: fd) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, Never>(wrappingChannelSynchronously: channel)
                }
            }
        try await channel.executeThenClose { inbound in
            // Reads until end-of-file or graceful shutdown, whichever comes first. A graceful
            // shutdown cancels the read; that is a normal end, not a failure of the role.
            do {
                try await cancelWhenGracefulShutdown {
                    for try await _ in inbound {}
                }
            } catch is CancellationError {}
        }
    }
}
