/// The release this build is, printed by `pipehook --version` (and checked against the Debian
/// package's version when one is built).
public enum PipehookVersion {
    public static let current = "0.3.0"
}
