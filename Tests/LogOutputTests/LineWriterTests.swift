import Foundation
@testable import LogOutput
import NIOCore
import NIOPosix
import Testing

@Suite("Log lines written whole and in order")
struct LineWriterTests {
    /// A pipe whose read end does not block; closed when the test ends.
    private final class Pipe: Sendable {
        let readEnd: Int32
        let writeEnd: Int32

        init() throws {
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw POSIXError(.EIO) }
            readEnd = fds[0]
            writeEnd = fds[1]
            _ = fcntl(readEnd, F_SETFL, fcntl(readEnd, F_GETFL) | O_NONBLOCK)
        }

        /// What is in the pipe now ("" when nothing is).
        func drain() -> String {
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = read(readEnd, &buffer, buffer.count)
                guard count > 0 else { break }
                bytes += buffer[0..<count]
            }
            return String(decoding: bytes, as: UTF8.self)
        }

        deinit {
            close(readEnd)
            close(writeEnd)
        }
    }

    @Test("lines logged in one event-loop turn are written at its end, together and in order")
    func linesOfOneTurnWrittenAtItsEnd() async throws {
        let pipe = try Pipe()
        let writer = LineWriter(descriptor: pipe.writeEnd)
        try await withLoop { loop in
            let duringTurn = try await loop.submit { () -> String in
                writer.emit(Array("one\n".utf8))
                writer.emit(Array("two\n".utf8))
                return pipe.drain()
            }.get()
            #expect(duringTurn == "", "lines were written inside the turn")
            // A task queued after the turn runs once the writer's flush has.
            try await loop.submit {}.get()
            #expect(pipe.drain() == "one\ntwo\n")
        }
    }

    @Test("a line from a thread that is no event loop is written at once, after the lines a loop still keeps")
    func lineOffTheLoopWrittenAtOnceAfterKeptOnes() async throws {
        let pipe = try Pipe()
        let writer = LineWriter(descriptor: pipe.writeEnd)
        writer.emit(Array("alone\n".utf8))
        #expect(pipe.drain() == "alone\n")

        try await withLoop { loop in
            // Hold the loop's turn open until the other thread has written.
            let offLoopWrote = DispatchSemaphore(value: 0)
            let turn = loop.submit {
                writer.emit(Array("kept\n".utf8))
                offLoopWrote.wait()
        }
        await Task.detached {
            // Wait (bounded) until the loop has kept its line, then write from this thread.
            for _ in 0..<10_000 where writer.keptBytes == 0 { usleep(100) }
            writer.emit(Array("later\n".utf8))
            offLoopWrote.signal()
        }.value
        try await turn.get()
        try await loop.submit {}.get()
        #expect(pipe.drain() == "kept\nlater\n")
        }
    }

    @Test("kept lines past the limit are written inside the turn, so a long turn holds a bounded amount")
    func keptLinesAreBounded() async throws {
        let pipe = try Pipe()
        let writer = LineWriter(descriptor: pipe.writeEnd)
        try await withLoop { loop in
            let line = Array(String(repeating: "x", count: 1023).utf8) + [UInt8(ascii: "\n")]
            let lines = LineWriter.keptBytesLimit / line.count + 1
            let (duringTurn, keptAtEnd) = try await loop.submit { () -> (Int, Int) in
                for _ in 0..<lines { writer.emit(line) }
                return (pipe.drain().utf8.count, writer.keptBytes)
            }.get()
            #expect(duringTurn == LineWriter.keptBytesLimit, "the first 64 KiB were written inside the turn")
            #expect(keptAtEnd == lines * line.count - LineWriter.keptBytesLimit)
        }
    }

    /// Runs `body` on a loop of its own, shut down afterwards, also when `body` throws.
    private func withLoop(_ body: (any EventLoop) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            try await body(group.next())
        } catch {
            try await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }
}
