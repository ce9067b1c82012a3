import Foundation

/// Stops the run with a message when an invariant does not hold: libFuzzer sees the abort as a
/// crash and saves the input under `.build-fuzz/artifacts/<target>/`.
@inline(never)
func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() {
        FileHandle.standardError.write(Data("invariant broken: \(message())\n".utf8))
        abort()
    }
}

/// The fuzzer's input as bytes.
func input(_ data: UnsafePointer<UInt8>, _ size: Int) -> [UInt8] {
    Array(UnsafeBufferPointer(start: data, count: size))
}
