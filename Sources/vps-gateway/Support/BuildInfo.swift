enum BuildInfo {
    /// Reported in `--version`, in `register` and in the gateway's logs.
    static let version = "0.1.0"
}
