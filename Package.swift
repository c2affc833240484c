// swift-tools-version:6.2
import PackageDescription

// One set of settings for every target: Swift 6 mode, and imports that never leak a
// dependency into a module's API by accident.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
    // Release builds specialise our generic types (MessageQueue, FirstOutcome, the method
    // descriptors) across our own modules instead of looking up generic metadata per call.
    .unsafeFlags(["-cross-module-optimization"], .when(configuration: .release)),
]

let grpcCore = Target.Dependency.product(name: "GRPCCore", package: "grpc-swift-2")
let grpcTransport = Target.Dependency.product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport")
let grpcProtobuf = Target.Dependency.product(name: "GRPCProtobuf", package: "grpc-swift-protobuf")
let protobuf = Target.Dependency.product(name: "SwiftProtobuf", package: "swift-protobuf")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let grdb = Target.Dependency.product(name: "GRDB", package: "GRDB.swift")
let grdbSQLite = Target.Dependency.product(name: "GRDBSQLite", package: "GRDB.swift")
let postgres = Target.Dependency.product(name: "PostgresNIO", package: "postgres-nio")
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let nioCore = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let lifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let unixSignals = Target.Dependency.product(name: "UnixSignals", package: "swift-service-lifecycle")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let nioHTTP2 = Target.Dependency.product(name: "NIOHTTP2", package: "swift-nio-http2")
let nioHPACK = Target.Dependency.product(name: "NIOHPACK", package: "swift-nio-http2")
let nioEmbedded = Target.Dependency.product(name: "NIOEmbedded", package: "swift-nio")
let nioSSL = Target.Dependency.product(name: "NIOSSL", package: "swift-nio-ssl")

let package = Package(
    name: "vps-gateway",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vps-gateway", targets: ["vps-gateway"]),
    ],
    dependencies: [
        .package(url: "https://github.com/grpc/grpc-swift-2.git", exact: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", exact: "2.9.2"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", exact: "1.46.0"),
        // Already in the graph through grpc's TLS support; the endpoint serves h2 over TLS.
        .package(url: "https://github.com/apple/swift-nio-ssl.git", exact: "2.37.6"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", exact: "2.101.3"),
        .package(url: "https://github.com/groue/GRDB.swift.git", exact: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", exact: "1.33.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", exact: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", exact: "2.13.0"),
        // Already in the graph through grpc's TLS support; the journal uses its SHA-256.
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/jpsim/Yams.git", exact: "6.2.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", exact: "1.0.2", traits: []),
    ],
    targets: [
        // Checked text forms read from operators and peers: durations, MAC and IP addresses,
        // DNS labels, untrusted text escaped for printing.
        .target(
            name: "TextFormats",
            swiftSettings: swiftSettings
        ),
        // Every setting of the gateway and the worker, defined once: flag, environment
        // variable, YAML key, default and rule.
        .target(
            name: "Settings",
            dependencies: ["TextFormats"],
            swiftSettings: swiftSettings
        ),
        // Concurrency building blocks: a bounded queue with batch reads, a watched value, a
        // deadline wait that costs a timer.
        .target(
            name: "AsyncPrimitives",
            dependencies: [],
            swiftSettings: swiftSettings
        ),
        // The wire contracts: generated protobuf/gRPC code plus the vocabulary around it.
        .target(
            name: "GatewayProtocol",
            dependencies: ["TextFormats", "RPCEndpoint", grpcCore, grpcProtobuf, protobuf],
            exclude: ["Generated/README.md"],
            swiftSettings: swiftSettings
        ),
        // zlib (Debian's zlib1g-dev): gzip for gRPC and Connect messages.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        // One HTTP/2 endpoint for gRPC and Connect: protocol chosen per stream by content
        // type, typed methods, limits, bounded shutdown.
        .target(
            name: "RPCEndpoint",
            dependencies: ["CZlib", "AsyncPrimitives", nioCore, nioPosix, nioHTTP2, nioHPACK, nioSSL, protobuf, logging],
            swiftSettings: swiftSettings
        ),
        // A grpc-swift client transport to an RPCServer's in-memory listener: a gateway and
        // its workers in one process without sockets (the in-process tests).
        .target(
            name: "RPCInMemory",
            dependencies: ["TextFormats", "RPCEndpoint", grpcCore, nioCore, nioHTTP2, nioHPACK],
            swiftSettings: swiftSettings
        ),
        // What a long-running process owns and how it ends: instance locks, sockets it
        // removes only while they are its own, the bound on a graceful shutdown.
        .target(
            name: "ProcessLifecycle",
            dependencies: [logging, lifecycle],
            swiftSettings: swiftSettings
        ),
        // The gateway: stream registry, fan-out and the admin API.
        .target(
            name: "GatewayServer",
            dependencies: ["TextFormats", "Settings", "AsyncPrimitives", "GatewayProtocol", "GatewayJournal", "DHCPLeases", "ProcessLifecycle", "RPCEndpoint", "Telemetry", "CMalloc", grpcCore, protobuf, logging, lifecycle, unixSignals, nioCore],
            swiftSettings: swiftSettings
        ),
        // SQLite's process-wide options (in C: sqlite3_config is variadic).
        .target(
            name: "CSQLiteProcess",
            linkerSettings: [.linkedLibrary("sqlite3")]
        ),
        // Statements on a GRDB connection run through SQLite's C API: the journal's two
        // writes per call and the inventory's lookups, without GRDB's per-statement overhead;
        // and SQLite's process-wide options.
        .target(
            name: "SQLiteDirect",
            dependencies: ["CSQLiteProcess", grdb, grdbSQLite],
            swiftSettings: swiftSettings
        ),
        // Gathers SQLite's WAL writes into one per commit (in C: a VFS is a C interface).
        .target(
            name: "CSQLiteWALBuffer",
            linkerSettings: [.linkedLibrary("sqlite3")]
        ),
        // The request journal: migrations, group commit, recovery queries, maintenance.
        .target(
            name: "GatewayJournal",
            dependencies: ["AsyncPrimitives", "ProcessLifecycle", "SQLiteDirect", "CSQLiteWALBuffer", grdb, grdbSQLite, crypto, logging, lifecycle],
            swiftSettings: swiftSettings
        ),
        // dnsmasq's lease file, the hosts file it serves, and the watcher between them.
        .target(
            name: "DHCPLeases",
            dependencies: ["TextFormats", "Settings", "AsyncPrimitives", "GatewayProtocol", logging, nioCore, nioPosix],
            swiftSettings: swiftSettings
        ),
        // The VPS-service side: dials gateways, registers, dispatches requests to handlers.
        .target(
            name: "GatewayWorker",
            dependencies: ["TextFormats", "Settings", "AsyncPrimitives", "GatewayProtocol", "Telemetry", "RPCEndpoint", nioCore, grpcCore, protobuf, logging, lifecycle],
            swiftSettings: swiftSettings
        ),
        // The environment's inventory (a SQLite file, or the platform's PostgreSQL) and the
        // FindVPSByLease handler on it.
        .target(
            name: "LeaseInventory",
            dependencies: ["TextFormats", "AsyncPrimitives", "GatewayProtocol", "GatewayWorker", "SQLiteDirect", grdb, postgres, nioCore, nioPosix, nioSSL, logging, lifecycle, protobuf],
            swiftSettings: swiftSettings
        ),
        // A client of the admin socket, for the CLI and the benchmark.
        .target(
            name: "GatewayAdminClient",
            dependencies: ["GatewayProtocol", "RPCEndpoint", protobuf],
            swiftSettings: swiftSettings
        ),
        // glibc's malloc.h (malloc_trim), which Swift's Glibc module leaves out.
        .systemLibrary(name: "CMalloc", path: "Sources/CMalloc"),
        // libsystemd (Debian's libsystemd-dev): sd_watchdog_enabled, sd_journal_sendv (notifications
        // are sent by hand, non-blocking: see ServiceNotifier).
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        // Talking to systemd (or the supervisor): readiness, status, watchdog, journald logs.
        .target(
            name: "SystemdSupport",
            dependencies: ["CSystemd", logging, lifecycle],
            swiftSettings: swiftSettings
        ),
        // The supervisor: configuration, child processes, restart policy, notify sockets.
        .target(
            name: "Supervision",
            dependencies: [
                "TextFormats", "Settings", "AsyncPrimitives", "SystemdSupport", "ProcessLifecycle", "Telemetry", logging, lifecycle, unixSignals, nioCore, nioPosix,
                .product(name: "Yams", package: "Yams"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ],
            swiftSettings: swiftSettings
        ),
        // Where logs go: standard error as text or JSON lines.
        .target(
            name: "LogOutput",
            dependencies: [logging, nioCore, nioPosix],
            swiftSettings: swiftSettings
        ),
        // What the roles export for Prometheus: the metric definitions, the registry, /metrics.
        .target(
            name: "Telemetry",
            dependencies: [.product(name: "Prometheus", package: "swift-prometheus"), nioCore, nioPosix, .product(name: "NIOHTTP1", package: "swift-nio"), logging, lifecycle],
            swiftSettings: swiftSettings
        ),
        // Properties of what an attacker controls (lease files, stream messages), for
        // libFuzzer (scripts/fuzz.sh) and for replaying the committed corpus in tests.
        .target(
            name: "FuzzTargets",
            dependencies: ["TextFormats", "DHCPLeases", "GatewayServer", "GatewayProtocol", protobuf],
            swiftSettings: swiftSettings
        ),
        // libFuzzer's LLVMFuzzerRunDriver, declared only: linked by -sanitize=fuzzer builds.
        .systemLibrary(name: "CLibFuzzer", path: "Sources/CLibFuzzer"),
        .executableTarget(
            name: "vps-gateway-fuzz",
            dependencies: ["FuzzTargets", "CLibFuzzer"],
            swiftSettings: swiftSettings
        ),
        // The load generator behind `vps-gateway bench`.
        .target(
            name: "GatewayBench",
            dependencies: ["TextFormats", "GatewayProtocol", "GatewayAdminClient", "GatewayWorker", logging],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "vps-gateway",
            dependencies: [
                "TextFormats", "Settings", "GatewayProtocol", "GatewayServer", "GatewayJournal", "DHCPLeases", "GatewayWorker", "LeaseInventory",
                "GatewayAdminClient", "GatewayBench", "LogOutput", "SystemdSupport", "Supervision", "ProcessLifecycle", "RPCEndpoint", "SQLiteDirect", "Telemetry", argumentParser, logging, lifecycle, unixSignals, protobuf, nioPosix, nioCore,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "LogOutputTests",
            dependencies: ["LogOutput", logging, nioCore, nioPosix],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "AsyncPrimitivesTests",
            dependencies: ["AsyncPrimitives"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewayServerTests",
            dependencies: ["AsyncPrimitives", "GatewayServer", "GatewayProtocol", "Telemetry", grpcCore, logging, protobuf],
            swiftSettings: swiftSettings
        ),
        // README "Adding a method", compiled and run: a method end to end, in process.
        .testTarget(
            name: "ExampleMethodTests",
            dependencies: ["GatewayProtocol", "GatewayServer", "GatewayWorker", "GatewayJournal", logging, protobuf],
            swiftSettings: swiftSettings
        ),
        // The stream contract and the fan-out with a gateway and workers in one process.
        .testTarget(
            name: "InProcessTests",
            dependencies: ["GatewayProtocol", "GatewayServer", "GatewayWorker", "GatewayJournal", "RPCEndpoint", "RPCInMemory", grpcCore, logging, protobuf],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewayJournalTests",
            dependencies: ["GatewayJournal", "CSQLiteWALBuffer", grdb, grdbSQLite, logging],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewayWorkerTests",
            dependencies: ["GatewayWorker", "GatewayProtocol", grpcCore, logging],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "LeaseInventoryTests",
            dependencies: ["TextFormats", "LeaseInventory", "GatewayWorker", "GatewayProtocol", grdb, grdbSQLite, protobuf, nioCore, nioPosix],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DHCPLeasesTests",
            dependencies: ["TextFormats", "DHCPLeases", "GatewayProtocol"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SupervisionTests",
            dependencies: ["Supervision", "Settings"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RPCEndpointTests",
            dependencies: ["RPCEndpoint", "AsyncPrimitives", nioCore, nioPosix, nioEmbedded, nioHPACK, nioHTTP2, protobuf, logging],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ProcessLifecycleTests",
            dependencies: ["ProcessLifecycle"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SystemdSupportTests",
            dependencies: ["SystemdSupport", logging],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "TextFormats", "Settings", "AsyncPrimitives", "vps-gateway", "GatewayProtocol", "GatewayAdminClient", "GatewayJournal", "LeaseInventory", "Telemetry", logging,
                grpcCore, grpcTransport, protobuf, grdb,
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
