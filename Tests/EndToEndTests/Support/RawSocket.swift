import Foundation
import TextFormats
#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP connection for hostile tests: the test writes whatever bytes it likes (garbage,
/// HTTP/1, hand-made HTTP/2 frames) and reads what comes back.
final class RawSocket: @unchecked Sendable {
    let fd: Int32

    init(port: Int) throws {
        fd = try Self.connectLoopback(port: port)
    }

    /// A connected TCP socket to 127.0.0.1:`port`; the caller closes it.
    static func connectLoopback(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClusterError("socket() failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw ClusterError("connect() to 127.0.0.1:\(port) failed: errno \(errno)")
        }
        return fd
    }

    deinit { close(fd) }

    /// Writes all of `bytes`; false once the peer has closed.
    @discardableResult
    func write(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }

    /// Reads until the peer closes or `timeout` passes; returns what arrived and whether the
    /// peer closed.
    func readUntilClosed(timeout: Duration) -> (bytes: [UInt8], closed: Bool) {
        var received: [UInt8] = []
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 65536)
        while ContinuousClock.now < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let remaining = max(1, Int32((deadline - .now).wholeMillisecondsClamped))
            guard Glibc.poll(&poller, 1, min(remaining, 200)) >= 0 else { break }
            guard poller.revents != 0 else { continue }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { return (received, true) }
            received += buffer[0..<count]
        }
        return (received, false)
    }
}

/// Hand-made HTTP/2 frames: what a misbehaving client sends without a library's checks.
enum RawHTTP2 {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8] = []) -> [UInt8] {
        let length = UInt32(payload.count)
        return [UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, flags,
                UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff)] + payload
    }

    static let emptySettings = frame(type: 0x4, flags: 0, stream: 0)

    /// The type of every whole frame in `bytes` (a server's answer, read raw).
    static func frameTypes(_ bytes: [UInt8]) -> [UInt8] {
        var types: [UInt8] = []
        var offset = 0
        while offset + 9 <= bytes.count {
            let length = Int(bytes[offset]) << 16 | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
            guard offset + 9 + length <= bytes.count else { break }
            types.append(bytes[offset + 3])
            offset += 9 + length
        }
        return types
    }

    /// A HEADERS frame (END_HEADERS, and END_STREAM when `endStream`) with every field as an
    /// HPACK literal without indexing, no Huffman coding.
    static func headers(stream: UInt32, _ fields: [(String, String)], endStream: Bool) -> [UInt8] {
        var block: [UInt8] = []
        for (name, value) in fields {
            block.append(0x00)
            block += length(name.utf8.count) + Array(name.utf8)
            block += length(value.utf8.count) + Array(value.utf8)
        }
        return frame(type: 0x1, flags: endStream ? 0x5 : 0x4, stream: stream, payload: block)
    }

    private static func length(_ count: Int) -> [UInt8] {
        precondition(count < 127, "header fields here are short")
        return [UInt8(count)]
    }
}

extension Duration {
    var wholeMillisecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        return max(0, seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }
}

/// A process's resident memory in KiB (VmRSS), or nil when it is gone.
func residentKiB(of pid: pid_t) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
    return Int(line.split(separator: " ").dropFirst().first ?? "")
}
