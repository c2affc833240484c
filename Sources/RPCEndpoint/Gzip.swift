import CZlib

/// gzip for message bodies (gRPC `grpc-encoding: gzip`, Connect `connect-content-encoding` /
/// `content-encoding`). Written against zlib directly: swift-nio-extras compresses whole
/// HTTP/1 bodies only, and messages here are compressed one by one with a size cap.
enum Gzip {
    /// Compresses `bytes` into the gzip format.
    static func compress(_ bytes: [UInt8]) throws(RPCStatus) -> [UInt8] {
        var stream = z_stream()
        // 15 window bits + 16: a gzip header and trailer rather than zlib's.
        guard deflateInit2_(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw RPCStatus(.internal, "cannot start gzip compression")
        }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(bytes.count))))
        let result: Int32 = bytes.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { out in
                stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
                stream.avail_in = UInt32(input.count)
                stream.next_out = out.baseAddress
                stream.avail_out = UInt32(out.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard result == Z_STREAM_END else { throw RPCStatus(.internal, "gzip compression failed (zlib \(result))") }
        output.removeLast(output.count - Int(stream.total_out))
        return output
    }

    /// Decompresses a gzip body, refusing one that would grow past `limit` bytes (a small
    /// compressed message can expand a thousandfold).
    static func decompress(_ bytes: [UInt8], limit: Int) throws(RPCStatus) -> [UInt8] {
        var stream = z_stream()
        // 15 + 32: accept gzip and zlib headers alike.
        guard inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw RPCStatus(.internal, "cannot start gzip decompression")
        }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: min(max(bytes.count * 4, 4096), 256 * 1024))
        var status: Int32 = Z_OK
        try bytes.withUnsafeBufferPointer { (input) throws(RPCStatus) in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.avail_in = UInt32(input.count)
            repeat {
                let produced: Int = chunk.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = UInt32(out.count)
                    status = inflate(&stream, Z_NO_FLUSH)
                    return out.count - Int(stream.avail_out)
                }
                guard status == Z_OK || status == Z_STREAM_END else {
                    throw RPCStatus(.invalidArgument, "the message is not valid gzip (zlib \(status))")
                }
                guard output.count + produced <= limit else {
                    throw RPCStatus(.resourceExhausted, "the message decompresses to more than the limit of \(limit) bytes")
                }
                output.append(contentsOf: chunk[0..<produced])
                if produced == 0 && stream.avail_in == 0 && status != Z_STREAM_END {
                    throw RPCStatus(.invalidArgument, "the gzip message is truncated")
                }
            } while status != Z_STREAM_END
        }
        return output
    }
}
