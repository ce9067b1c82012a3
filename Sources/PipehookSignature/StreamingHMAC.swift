import CLibCrypto

/// Incremental SHA-256 over system libcrypto's EVP digest API (not deprecated in OpenSSL 3),
/// for hashing downloads while they stream. One instance per hash, used by one task at a time.
public final class SHA256Hasher {
    private let context: OpaquePointer

    public init() {
        guard let context = EVP_MD_CTX_new() else { preconditionFailure("EVP_MD_CTX_new failed") }
        self.context = context
        precondition(EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1, "EVP_DigestInit_ex failed")
    }

    deinit { EVP_MD_CTX_free(context) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        precondition(EVP_DigestUpdate(context, base, bytes.count) == 1, "EVP_DigestUpdate failed")
    }

    public func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The 32-byte digest. Call once.
    public func finalize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let ok = out.withUnsafeMutableBytes { EVP_DigestFinal_ex(context, $0.baseAddress?.assumingMemoryBound(to: UInt8.self), &length) }
        precondition(ok == 1 && length == 32, "EVP_DigestFinal_ex failed")
        return out
    }
}

/// Incremental HMAC-SHA256 (RFC 2104 over `SHA256Hasher`), for signing bodies that are streamed
/// from disk and never held in memory whole.
public struct StreamingHMAC: ~Copyable {
    private let inner = SHA256Hasher()
    private let outerKey: [UInt8]

    public init(key: [UInt8]) {
        var block = key.count > 64 ? key.withUnsafeBytes { Crypto.sha256($0) } : key
        block += [UInt8](repeating: 0, count: 64 - block.count)
        outerKey = block.map { $0 ^ 0x5c }
        inner.update(block.map { $0 ^ 0x36 })
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) { inner.update(bytes) }
    public mutating func update(_ bytes: [UInt8]) { inner.update(bytes) }

    public consuming func finalize() -> [UInt8] {
        let innerDigest = inner.finalize()
        let outer = SHA256Hasher()
        outer.update(outerKey)
        outer.update(innerDigest)
        return outer.finalize()
    }
}

extension Signer {
    /// The `v1,…` header for a body fed in pieces: `{id}.{timestamp}.` then the body.
    public static func streamingSignature(secret: SigningSecret, id: String, timestamp: Int64) -> StreamingSigner {
        StreamingSigner(secret: secret, id: id, timestamp: timestamp)
    }
}

public struct StreamingSigner: ~Copyable {
    private var mac: StreamingHMAC

    init(secret: SigningSecret, id: String, timestamp: Int64) {
        mac = StreamingHMAC(key: secret.key)
        mac.update(Array("\(id).\(timestamp).".utf8))
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) { mac.update(bytes) }
    public mutating func update(_ bytes: [UInt8]) { mac.update(bytes) }

    public consuming func header() -> String { "v1," + Base64.encode(mac.finalize()) }
}
