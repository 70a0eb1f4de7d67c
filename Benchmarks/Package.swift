// swift-tools-version: 6.1
import PackageDescription

// The benchmark program, `hangar-bench`, in a package of its own (as swift-nio keeps its benchmarks): the daemon's
// build and the test suite never compile it. It depends on the product's package by path; scripts/bench*.sh build
// it (scripts/lib/bench-build.sh) next to the hangard they measure.

/// SwiftPM names a package that is depended on by path after its directory, which is the clone's name (`main`,
/// `hangar`, a CI folder), not `name:` in its manifest.
let hangar = String(Context.packageDirectory.split(separator: "/").dropLast().last ?? "hangar").lowercased()

let package = Package(
    name: "hangar-benchmarks",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "hangar-bench", targets: ["HangarBench"])
    ],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        .executableTarget(
            name: "HangarBench",
            dependencies: [
                // The echo server (`hangar-bench echo-server`) is Hangar's own gRPC server with a trivial method:
                // the reference every figure is measured beside. It reaches the server through the
                // `@_spi(Benchmarks)` surface of HangarGRPC.
                .product(name: "HangarGRPC", package: hangar),
                .product(name: "HangarRuntime", package: hangar),
                .product(name: "HangarComponents", package: hangar),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: [
                .enableUpcomingFeature("ExistentialAny"),
                .enableUpcomingFeature("InternalImportsByDefault"),
            ]
        )
    ]
)
