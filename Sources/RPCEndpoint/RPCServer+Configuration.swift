extension RPCServer {
    /// Where a server listens and the limits it enforces on every connection.
    public struct Configuration: Sendable {
        public enum Address: Sendable, Equatable {
            case tcp(host: String, port: Int)
            /// A Unix socket; the caller prepares the path (a stale socket is not removed here).
            case unix(path: String)
            /// Streams handed over in memory, for tests in one process: no socket, no HTTP/2
            /// connection, none of the connection limits below.
            case inMemory(InMemoryListener)
        }

        public var address: Address
        /// For a Unix socket: its mode, set before the socket is reachable at its path (it is
        /// bound in a private directory, given the mode, then moved into place), so no other
        /// user can connect in between. Nil leaves the mode to the umask.
        public var unixSocketMode: UInt16?
        /// How logs name this server ("the stream port", "the admin socket").
        public var name: String
        /// The largest message accepted (after decompression). Default 4 MiB.
        public var maxMessageBytes: Int = 4 * 1024 * 1024
        /// Streams a client may have open at once on one connection (SETTINGS). Default 256.
        public var maxConcurrentStreams: Int = 256
        /// The largest header block a client may send (SETTINGS). Default 16 KiB.
        public var maxHeaderListSize: Int = 16 * 1024
        /// Connections open at once; more are closed as they arrive. Default 4,096.
        public var maxConnections: Int = 4096
        /// A connection without an open stream (one that never sent the preface, or whose
        /// streams all ended) is closed after this. Default 30 s.
        public var idleTimeout: Duration = .seconds(30)
        /// HTTP/2 pings on a connection that read nothing for this long; nil sends none.
        /// Default 30 s, so with the timeout a dead peer is found within a minute.
        public var keepaliveInterval: Duration? = .seconds(30)
        /// How long a keepalive ping may stay unanswered before the connection is closed.
        /// Default 20 s.
        public var keepaliveTimeout: Duration = .seconds(20)
        /// Pings closer together than this are strikes; the third gets GOAWAY. Default 10 s.
        public var minClientPingInterval: Duration = .seconds(10)
        /// The HTTP/2 flow-control window per stream and connection. Default 1 MiB.
        public var windowSize: Int = 1 << 20
        /// h2 over TLS instead of cleartext HTTP/2; nil (the default) serves h2c.
        public var tls: TLS?

        /// TLS from PEM files (systemd's `LoadCredential=` puts them in
        /// `$CREDENTIALS_DIRECTORY`): ALPN `h2`, TLS 1.2 or later.
        public struct TLS: Sendable, Equatable {
            /// The server's certificate chain, leaf first.
            public var certificateChain: String
            public var privateKey: String
            /// With it, every client must present a certificate this CA signed (mTLS).
            public var clientCA: String?

            public init(certificateChain: String, privateKey: String, clientCA: String? = nil) {
                self.certificateChain = certificateChain
                self.privateKey = privateKey
                self.clientCA = clientCA
            }
        }

        public init(address: Address, name: String) {
            self.address = address
            self.name = name
        }
    }
}
