import Foundation
import HangarComponents
import HangarRedis
import HangarRuntime
import HangarSQLite

/// A tenancy or resources file loaded as hangard loads it (`NodeConfiguration.load`, with every component type
/// hangard registers but PostgreSQL's), from a directory of its own holding only that file.
enum YAMLFuzz {
    enum Kind {
        case tenancy, resources
    }

    static let registry: ComponentRegistry = {
        var registry = ComponentRegistry()
        HangarComponents.register(into: &registry)
        HangarSQLite.register(into: &registry)
        HangarRedis.register(into: &registry)
        return registry
    }()

    /// A directory per process (in memory when /dev/shm exists), removed when the fuzzer exits.
    static let directory: String = {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let directory = "\(base)/hangar-fuzz-\(getpid())"
        for name in ["tenancy", "resources"] {
            try? FileManager.default.createDirectory(
                atPath: "\(directory)/\(name)", withIntermediateDirectories: true)
        }
        atexit { try? FileManager.default.removeItem(atPath: YAMLFuzz.directory) }
        return directory
    }()

    static func run(_ input: ArraySlice<UInt8>, kind: Kind) {
        let folder = "\(directory)/\(kind == .tenancy ? "tenancy" : "resources")"
        guard FileManager.default.createFile(atPath: "\(folder)/fuzz.yaml", contents: Data(input)) else {
            fatalError("cannot write \(folder)/fuzz.yaml")
        }
        let configuration: NodeConfiguration
        do {
            configuration = try NodeConfiguration.load(
                tenancyDirectory: kind == .tenancy ? folder : nil,
                resourcesDirectory: kind == .resources ? folder : nil,
                registry: registry, environment: ["FUZZ_ENV": "value"], logger: FuzzRuntime.logger)
        } catch {
            return  // refused with a ConfigurationError: what a bad file should get
        }
        // What the daemon builds from a configuration it accepted.
        _ = TenantRegistry(configuration: configuration, maxRequestBytes: 1 << 20)
    }
}
