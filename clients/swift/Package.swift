// swift-tools-version:6.0
// Boltorezka's Swift client: wire models, the REST API, the realtime WebSocket client and a
// media-agnostic call engine. No dependency beyond the toolchain (Foundation and, on Linux,
// FoundationNetworking).

import PackageDescription

let package = Package(
    name: "Boltorezka",
    platforms: [.macOS(.v13), .iOS(.v16), .tvOS(.v16), .watchOS(.v9), .visionOS(.v1)],
    products: [
        .library(name: "BoltorezkaCoreModels", targets: ["BoltorezkaCoreModels"]),
        .library(name: "BoltorezkaNetworking", targets: ["BoltorezkaNetworking"]),
        .library(name: "BoltorezkaRealtime", targets: ["BoltorezkaRealtime"]),
        .library(name: "BoltorezkaCallEngine", targets: ["BoltorezkaCallEngine"]),
    ],
    targets: [
        .target(name: "BoltorezkaCoreModels"),
        .target(name: "BoltorezkaNetworking", dependencies: ["BoltorezkaCoreModels"]),
        .target(name: "BoltorezkaRealtime", dependencies: ["BoltorezkaCoreModels"]),
        .target(
            name: "BoltorezkaCallEngine",
            dependencies: ["BoltorezkaCoreModels", "BoltorezkaRealtime"]
        ),
        // Fakes and helpers the test targets share (a fake WebSocket server, event logs).
        .target(
            name: "BoltorezkaTestSupport",
            dependencies: ["BoltorezkaCoreModels", "BoltorezkaRealtime"],
            path: "Tests/Support"
        ),
        .testTarget(
            name: "BoltorezkaCoreModelsTests",
            dependencies: ["BoltorezkaCoreModels"]
        ),
        .testTarget(
            name: "BoltorezkaRealtimeTests",
            dependencies: ["BoltorezkaCoreModels", "BoltorezkaRealtime", "BoltorezkaTestSupport"]
        ),
        .testTarget(
            name: "BoltorezkaCallEngineTests",
            dependencies: ["BoltorezkaCoreModels", "BoltorezkaCallEngine", "BoltorezkaRealtime", "BoltorezkaTestSupport"]
        ),
        .testTarget(
            name: "BoltorezkaLiveTests",
            dependencies: [
                "BoltorezkaCoreModels", "BoltorezkaNetworking", "BoltorezkaRealtime",
                "BoltorezkaCallEngine", "BoltorezkaTestSupport",
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
