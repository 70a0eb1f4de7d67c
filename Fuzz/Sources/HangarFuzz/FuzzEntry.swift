import Foundation

// libFuzzer's entry points: it calls these C symbols, which is why they are `public` and `@_cdecl`. The target is
// chosen once, by HANGAR_FUZZ_TARGET (scripts/fuzz.sh sets it).

/// libFuzzer's driver (`-sanitize=fuzzer` links it): parses the options, runs the inputs, reports crashes.
@_silgen_name("LLVMFuzzerRunDriver")
func llvmFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafeRawPointer?, Int) -> CInt
) -> CInt

/// The executable's entry point. SwiftPM links an executable target with `main` renamed to `<module>_main` (so that
/// tests can link it), which hides libFuzzer's own `main`; this one hands the process to libFuzzer's driver.
@_cdecl("HangarFuzz_main")
public func hangarFuzzMain(
    _ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
) -> CInt {
    var argc = argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return llvmFuzzerRunDriver(&argc, &argv) { hangarFuzzTestOneInput($0, $1) }
}

/// Called once before the first input: resolves the target, or writes every seed corpus and exits when
/// HANGAR_FUZZ_WRITE_SEEDS names a directory (how Fuzz/Corpus is regenerated).
@_cdecl("LLVMFuzzerInitialize")
public func hangarFuzzInitialize(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>
) -> CInt {
    let environment = ProcessInfo.processInfo.environment
    if let directory = environment["HANGAR_FUZZ_WRITE_SEEDS"] {
        do {
            try FuzzSeeds.write(to: directory)
            exit(0)
        } catch {
            FileHandle.standardError.write(Data("hangar-fuzz: cannot write the seeds: \(error)\n".utf8))
            exit(1)
        }
    }
    _ = FuzzTarget.selected
    return 0
}

/// Called for every input: runs it through the selected target. A crash, a trap or a failed invariant
/// (`preconditionFailure`) is what libFuzzer reports.
@_cdecl("LLVMFuzzerTestOneInput")
public func hangarFuzzTestOneInput(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let bytes = count == 0 ? [] : Array(UnsafeRawBufferPointer(start: start, count: count))
    FuzzTarget.selected.run(bytes[...])
    return 0
}
