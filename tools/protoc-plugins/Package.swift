// swift-tools-version:6.2
// Builds the protoc plugins that `make proto` uses. Kept apart from the main package so a
// normal build never compiles them (the generated code is committed).
import PackageDescription

let package = Package(
    name: "protoc-plugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
    ]
)
