import ArgumentParser

/// `hangar-bench`: measures hangard as a program that prints numbers (and writes them to a file); see
/// BENCHMARKS.md and scripts/bench.sh.
@main
struct HangarBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hangar-bench",
        abstract: "Benchmark hangard over its per-app Unix sockets with a minimal gRPC client.",
        subcommands: [
            BenchRunCommand.self, EchoServerCommand.self, NoisyNeighbourCommand.self, AttachCommand.self,
            SidecarCommand.self, CompareCommand.self, RedisStreamCommand.self, OverloadCommand.self,
        ],
        defaultSubcommand: BenchRunCommand.self)
}
