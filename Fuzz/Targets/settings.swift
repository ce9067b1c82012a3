// libFuzzer target: the configuration loader (Sources/PipehookSettings: Yams, ${VAR}
// substitution, validation with key paths, units).
//
// Input: a YAML document. The environment has a few variables, so `${…}` is exercised.
//
// Invariants:
// - the loader either returns settings or throws a ConfigError with at least one problem, each
//   with a message; the same text gives the same outcome twice;
// - accepted settings are valid: at least one source, every source name URL-safe with at least
//   one secret and a positive tolerance; retry delays ordered and attempts ≥ 1; a port in range;
//   the body limit within 1 byte…64 MiB; route names unique; every route has steps and statuses;
//   no exec step sets PIPEHOOK_* variables; every download template is relative;
// - units never come out negative.
import Foundation
import PipehookSettings

let environment = [
    "HOME": "/root", "SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "EMPTY": "", "PORT": "8787",
    // The variables config/*.yaml (the seeds) use.
    "PIPEVIDEO_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "OPS_HOOK_SECRET": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    "PIPEHOOK_ADMIN_TOKEN": "0123456789abcdef0123", "PIPEVIDEO_API_KEY": "pv_test",
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: input(data, size), as: UTF8.self)
    if size <= 64 {
        if let value = Units.milliseconds(text) { check(value >= 0, "negative duration for \(text.debugDescription)") }
        if let value = Units.bytes(text) { check(value >= 0, "negative size for \(text.debugDescription)") }
        _ = EnvSubstitution.apply(text, environment: environment)
    }
    let first = outcome(text)
    check(first == outcome(text), "two loads of the same text differ")
    return 0
}

/// A comparable summary of one load: the problems, or the shape of the settings (after checking them).
func outcome(_ text: String) -> [String] {
    let settings: Settings
    do {
        settings = try SettingsParser.parse(yaml: text, environment: environment)
    } catch {
        check(!error.problems.isEmpty, "a ConfigError without problems")
        check(error.problems.allSatisfy { !$0.message.isEmpty }, "a problem without a message")
        return error.problems.map(\.description)
    }
    check(!settings.sources.isEmpty, "accepted without a source")
    for source in settings.sources {
        check(!source.name.isEmpty && source.name.utf8.allSatisfy { $0 < 0x80 && $0 != UInt8(ascii: "/") }, "source name \(source.name.debugDescription)")
        check(!source.secrets.isEmpty && source.secrets.allSatisfy { !$0.key.isEmpty }, "source \(source.name) without a secret")
        check(source.toleranceSeconds >= 1, "tolerance \(source.toleranceSeconds)")
    }
    check((0...65535).contains(settings.listen.port), "port \(settings.listen.port)")
    check((1...(64 << 20)).contains(settings.maxBodyBytes), "max_body_bytes \(settings.maxBodyBytes)")
    check(settings.dedupWindowSeconds >= 60 && settings.retentionSeconds >= 60, "windows below a minute")
    check(settings.readTimeoutMilliseconds >= 100, "read_timeout \(settings.readTimeoutMilliseconds)")
    checkRetry(settings.retry, "retry")
    check(Set(settings.routes.map(\.name)).count == settings.routes.count, "duplicate route names accepted")
    for route in settings.routes {
        check(!route.name.isEmpty && !route.on.isEmpty && !route.steps.isEmpty, "route \(route.name.debugDescription) is incomplete")
        for step in route.steps {
            checkRetry(step.retry, "\(route.name) retry")
            switch step.action {
            case .exec(let exec):
                check(!exec.command.isEmpty && exec.timeoutMilliseconds >= 1, "exec step without command or timeout")
                check(!exec.environment.keys.contains { $0.hasPrefix("PIPEHOOK_") }, "exec env sets PIPEHOOK_*")
            case .download(let download):
                check(!download.directory.isEmpty && download.maxBytes >= 1, "download step without dir or limit")
                check(!download.pathTemplate.text.isEmpty && !download.pathTemplate.text.hasPrefix("/"), "absolute download path")
            case .post(let post):
                check(post.url.hasPrefix("http://") || post.url.hasPrefix("https://"), "post url \(post.url.debugDescription)")
            }
        }
    }
    return ["ok", "\(settings.sources.count)", "\(settings.routes.count)", settings.listen.description]
}

func checkRetry(_ retry: RetryPolicy, _ what: String) {
    check(retry.attempts >= 1, "\(what): attempts \(retry.attempts)")
    check(retry.initialDelayMilliseconds >= 0 && retry.maxDelayMilliseconds >= retry.initialDelayMilliseconds, "\(what): delays out of order")
}
