import ArgumentParser
import Foundation
import GatewayAdminClient

/// The documented exit codes (see the root command's help). Values from sysexits.h where
/// one fits, so scripts and systemd read them the usual way.
enum Exit {
    static let success = ExitCode(0)
    /// A lookup or call that every receiver answered with "not found".
    static let notFound = ExitCode(1)
    /// No receivers, deadline exceeded, or failed.
    static let unresolved = ExitCode(2)
    /// EX_USAGE: a flag or argument is wrong.
    static let usage = ExitCode(64)
    /// EX_DATAERR: input data (a payload file, hex) is wrong.
    static let dataError = ExitCode(65)
    /// EX_NOINPUT: a file to read (the journal) does not exist or cannot be opened.
    static let noInput = ExitCode(66)
    /// EX_UNAVAILABLE: the gateway's admin socket cannot be reached.
    static let unavailable = ExitCode(69)
    /// EX_SOFTWARE: an internal error.
    static let software = ExitCode(70)
    /// EX_CANTCREAT: another gateway, supervisor or worker holds this one's lock (its
    /// runtime files, journal or notify directory); the message names its pid.
    static let alreadyRunning = ExitCode(73)
    /// EX_IOERR: a write failed (a full disk).
    static let ioError = ExitCode(74)
    /// EX_TEMPFAIL: the supervisor gave a child up and escalates to systemd.
    static let tempFail = ExitCode(75)
    /// EX_NOPERM: this user may not use the admin socket.
    static let noPermission = ExitCode(77)
    /// EX_CONFIG: a role refused to start because of its configuration.
    static let config = ExitCode(78)

    /// The exit code of an admin-socket failure.
    static func code(for error: AdminClientError) -> ExitCode {
        switch error.code {
        case .unreachable, .shuttingDown: unavailable
        case .rejected: usage
        case .notRecorded: ioError
        case .permissionDenied: noPermission
        default: software
        }
    }
}

/// Writes one line to standard error. (`fputs` on the C `stderr` global does not compile in
/// Swift 6 mode.)
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Fails a command with a message on standard error and an exit code.
func fail(_ message: String, _ code: ExitCode) -> ExitCode {
    printError("vps-gateway: \(message)")
    return code
}
