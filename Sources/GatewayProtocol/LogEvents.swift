/// The fixed journald `MESSAGE_ID` of each request lifecycle event (128-bit ids, like
/// `systemd-id128 new` makes), so `journalctl MESSAGE_ID=…` lists every event of a kind and
/// `journalctl REQUEST_ID=…` one request's whole history. Logged as the `message_id` metadata
/// key; the journald backend turns metadata keys into fields.
public enum LogEventID {
    /// Gateway: a call ended (outcome, attempts, duration).
    public static let callFinished = "4f1c2a9e7b3d4e6a9c0d1e2f3a4b5c6d"
    /// Gateway: an attempt failed and will be retried.
    public static let attemptRetried = "8a7b6c5d4e3f40a1b2c3d4e5f6a7b8c9"
    /// Gateway: a journal row left unfinished by an earlier run is being retried.
    public static let requestRecovered = "2d3e4f5a6b7c48d9e0f1a2b3c4d5e6f7"
    /// Worker: a handler answered (or the request was cancelled or timed out).
    public static let requestHandled = "c1d2e3f4a5b64c7d8e9f0a1b2c3d4e5f"
    /// Gateway: the hosts file was rewritten from the DHCP leases.
    public static let hostsUpdated = "9e8d7c6b5a4f43e2d1c0b9a8f7e6d5c4"
}
