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

/// Foundation refuses numbers it cannot hold in a Double, which JSON allows (shared by the targets
/// that compare with JSONSerialization).
/// A digit run of 300 or more, or an exponent of three or more digits.
func hasHugeNumber(_ bytes: [UInt8]) -> Bool {
    var run = 0
    var afterExponent = false
    for byte in bytes {
        if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
            run += 1
            if run >= 300 || (afterExponent && run >= 3) { return true }
        } else {
            afterExponent = (byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E")) || (afterExponent && run == 0 && (byte == UInt8(ascii: "+") || byte == UInt8(ascii: "-")))
            run = 0
        }
    }
    return false
}
