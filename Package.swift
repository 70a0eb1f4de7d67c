// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

/// What nearly every target uses: SwiftNIO's core and POSIX modules, and swift-log.
let nioAndLogging: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOPosix", package: "swift-nio"),
    .product(name: "Logging", package: "swift-log"),
]

/// Release links use lld with packed relative relocations (DT_RELR, glibc 2.36+): hangard has about 110,000
/// relative relocations, which as RELA entries are 2.6 MB that the loader reads and applies at every start.
let compactRelocations: [LinkerSetting] = [
    .unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"], .when(configuration: .release))
]

let package = Package(
    name: "hangar",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "hangard", targets: ["hangard"]),
        .executable(name: "hangar-bench", targets: ["HangarBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/vapor/sqlite-nio.git", from: "1.13.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // Building-block protocols, their value types and the in-memory drivers. Knows nothing of gRPC, HTTP or tenants.
        .target(
            name: "HangarComponents",
            dependencies: nioAndLogging,
            swiftSettings: strict
        ),
        // SQLite-backed components (state.sqlite). SQLite itself is the copy vendored by sqlite-nio.
        .target(
            name: "HangarSQLite",
            dependencies: [
                "HangarComponents",
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
            ] + nioAndLogging,
            swiftSettings: strict
        ),
        // The runtime: configuration, tenancy, identity, the gate, and building-block operations shared by both front-ends.
        .target(
            name: "HangarRuntime",
            dependencies: [
                "HangarComponents",
                "HangarSQLite",
            ] + nioAndLogging + [
                .product(name: "Yams", package: "Yams"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        // libsystemd (Debian: libsystemd-dev), linked for sd_notify, sd_listen_fds and the journal.
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        // The service manager seen from hangard: readiness, watchdog and status notifications, inherited listening
        // sockets (socket activation) and native journal logging. Everything is a no-op outside systemd.
        .target(
            name: "HangarSystemd",
            dependencies: [
                "CSystemd",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // gRPC front-end: a purpose-built gRPC server on its own HTTP/2 connection handler (HPACK decoding from
        // swift-nio-http2's NIOHPACK) + swift-protobuf.
        .target(
            name: "HangarGRPC",
            dependencies: [
                "HangarRuntime",
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ] + nioAndLogging,
            exclude: ["Protos"],
            swiftSettings: strict
        ),
        // HTTP/1.1 front-end: a purpose-built server on NIOHTTP1 (decoder, encoder, pipelining) with its own
        // connection handler and router.
        .target(
            name: "HangarHTTP",
            dependencies: [
                "HangarRuntime",
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ] + nioAndLogging,
            swiftSettings: strict
        ),
        .executableTarget(
            name: "hangard",
            dependencies: [
                "HangarRuntime",
                "HangarSystemd",
                "HangarGRPC",
                "HangarHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ] + nioAndLogging,
            swiftSettings: strict,
            linkerSettings: compactRelocations
        ),
        .executableTarget(
            name: "HangarBench",
            dependencies: [
                "HangarGRPC",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "HangarHTTPTests",
            dependencies: ["HangarHTTP", .product(name: "NIOHTTP1", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "HangarSystemdTests",
            dependencies: ["HangarSystemd", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "HangarComponentsTests",
            dependencies: [
                "HangarComponents",
                "HangarSQLite",
            ] + nioAndLogging,
            swiftSettings: strict
        ),
        .testTarget(
            name: "HangarRuntimeTests",
            dependencies: [
                "HangarRuntime",
                "HangarGRPC",
                "HangarComponents",
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ] + nioAndLogging,
            swiftSettings: strict
        ),
    ]
)
