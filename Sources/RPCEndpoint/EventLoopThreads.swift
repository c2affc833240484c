import NIOCore

/// The threads of NIO's singleton event loop group, which every server and client in this
/// package runs on.
public enum EventLoopThreads {
    /// Gives the group `count` threads. NIO takes this only before anything has used the group,
    /// and only once per process (it stops the program otherwise), so a command's `run` calls
    /// it first thing and nothing else does: not a library, not a test (suites share a process).
    public static func configure(count: Int) {
        NIOSingletons.groupLoopCountSuggestion = count
    }

    /// How many threads the group has (NIO's default: one per core).
    public static var count: Int { NIOSingletons.groupLoopCountSuggestion }
}
