// swift-tools-version:6.2
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "pipehook",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "pipehook", targets: ["pipehook"]),
        .library(name: "PipehookDaemon", targets: ["PipehookDaemon"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // System OpenSSL libcrypto: HMAC-SHA256, SHA-256, constant-time compare.
        .systemLibrary(
            name: "CLibCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        // Standard Webhooks / Svix signatures. Pure: only the crypto shim and Foundation.
        .target(name: "PipehookSignature", dependencies: ["CLibCrypto"], swiftSettings: strict),
        // Generation status ranks and the one-way transition rules. Pure.
        .target(name: "PipehookLifecycle", swiftSettings: strict),
        // Provider payload formats (Pipevideo first) behind one protocol.
        .target(name: "PipehookFormats", dependencies: ["PipehookLifecycle"], swiftSettings: strict),
        // YAML configuration: parsing, ${VAR} substitution, validation with key paths.
        .target(
            name: "PipehookSettings",
            dependencies: [
                "PipehookSignature", "PipehookLifecycle", "PipehookFormats",
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        // The exported series, through an injected MetricsFactory (Prometheus in the daemon).
        .target(
            name: "PipehookMetrics",
            dependencies: ["PipehookLifecycle", .product(name: "CoreMetrics", package: "swift-metrics")],
            swiftSettings: strict
        ),
        // The store protocol and its value types; knows no database.
        .target(
            name: "PipehookStore",
            dependencies: ["PipehookLifecycle", "PipehookFormats", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // SQLite implementation of the store (GRDB, WAL, group commit).
        .target(
            name: "PipehookSQLite",
            dependencies: [
                "PipehookStore", "PipehookLifecycle", "PipehookFormats",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // PostgreSQL implementation of the store, shared by several instances (SPEC §9).
        .target(
            name: "PipehookPostgres",
            dependencies: [
                "PipehookStore", "PipehookLifecycle", "PipehookFormats",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The webhook intake over HTTP; sees the store only through its protocol.
        .target(
            name: "PipehookHTTP",
            dependencies: [
                "PipehookSignature", "PipehookFormats", "PipehookLifecycle", "PipehookStore", "PipehookMetrics",
                "PipehookReconcile", "PipehookSettings",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Route steps: exec (subprocess), download (file drop), post (re-POST). Each attempt of a
        // step becomes a `StepOutcome`; retries and bookkeeping belong to the dispatcher.
        .target(
            name: "PipehookHandlers",
            dependencies: [
                "PipehookLifecycle", "PipehookSettings", "PipehookSignature", "PipehookStore", "PipehookFormats",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The job dispatcher: leases, ordered steps, attempts, backoff with jitter, dead letters.
        .target(
            name: "PipehookDispatch",
            dependencies: [
                "PipehookStore", "PipehookSettings", "PipehookHandlers", "PipehookLifecycle", "PipehookMetrics",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // Reconciliation with the Pipevideo API: paced client, poller service, URL refreshes.
        .target(
            name: "PipehookReconcile",
            dependencies: [
                "PipehookStore", "PipehookSettings", "PipehookFormats", "PipehookLifecycle", "PipehookHandlers", "PipehookMetrics",
                "PipehookSignature",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // Composition root: settings → store → services; CLI command bodies.
        .target(
            name: "PipehookDaemon",
            dependencies: [
                "PipehookSignature", "PipehookFormats", "PipehookLifecycle", "PipehookSettings",
                "PipehookStore", "PipehookSQLite", "PipehookPostgres", "PipehookHTTP", "PipehookHandlers", "PipehookDispatch",
                "PipehookReconcile",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                "PipehookMetrics",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "pipehook",
            dependencies: [
                "PipehookDaemon", "PipehookStore", "PipehookSettings", "PipehookLifecycle", "PipehookFormats",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // Micro-benchmarks of the hot path: `swift package benchmark` (release build).
        .executableTarget(
            name: "PipehookMicro",
            dependencies: [
                "PipehookSignature", "PipehookFormats", "PipehookLifecycle", "PipehookReconcile", "PipehookHandlers",
                "PipehookDaemon", "PipehookSettings", "PipehookStore",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            path: "Benchmarks/PipehookMicro",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .testTarget(
            name: "PipehookUnitTests",
            dependencies: [
                "PipehookSignature", "PipehookLifecycle", "PipehookFormats", "PipehookSettings", "PipehookDispatch",
                "PipehookReconcile", "PipehookStore",
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "PipehookHandlerTests",
            dependencies: [
                "PipehookHandlers", "PipehookSettings", "PipehookSignature", "PipehookLifecycle",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "PipehookIntegrationTests",
            dependencies: [
                "pipehook", "PipehookDaemon", "PipehookSQLite", "PipehookPostgres", "PipehookHTTP", "PipehookStore",
                "PipehookSignature", "PipehookSettings", "PipehookDispatch", "PipehookHandlers", "PipehookFormats",
                "PipehookMetrics", "PipehookReconcile", "PipehookLifecycle", .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            // The headless-Chromium driver, run by StatusPageTests with python3.
            exclude: ["Browser"],
            swiftSettings: strict
        ),
    ]
)
