import Foundation
import LeaseInventory
import Settings
#if canImport(Glibc)
import Glibc
#endif

/// Reads the environment variables the roles document.
enum Environment {
    static func value(_ name: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
        return value
    }

    static var hostName: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "localhost" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Loads a shared secret from a file (flag) or a variable. A file wins; its trailing newline
/// is dropped. The secret itself never appears in a message.
enum SecretSource {
    /// `file` is the flag's text; `setting` names the flag and its variable.
    static func load(file: String?, setting: OptionalSetting<String>, variable: String) throws -> String {
        if let path = try setting.value(file) { return try read(path, what: "API secret") }
        guard let secret = Environment.value(variable) else {
            throw ConfigurationProblem("no API secret: set \(variable) or give \(setting.option) PATH (or \(setting.variable ?? setting.option))")
        }
        return secret
    }

    /// A secret file's content without its trailing newline; empty is an error.
    static func read(_ path: String, what: String) throws -> String {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationProblem("cannot read the \(what) file '\(path)': \(error.localizedDescription)")
        }
        let secret = text.trimmingCharacters(in: .newlines)
        guard !secret.isEmpty else { throw ConfigurationProblem("the \(what) file '\(path)' is empty") }
        return secret
    }
}

/// A configuration value a role cannot start with; reported with exit code 78.
struct ConfigurationProblem: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A PostgreSQL inventory's password, from a file only (never the URL, the command line or
/// the YAML): `--inventory-password-file`, else `$VPS_INVENTORY_PASSWORD_FILE`, else the
/// systemd credential `inventory-password` when the unit loads one. Nil for SQLite.
enum InventoryPassword {
    static func load(file: String?, for url: String) throws -> String? {
        guard case .postgres = try InventoryLocation(url: url) else { return nil }
        var path = file ?? Environment.value("VPS_INVENTORY_PASSWORD_FILE")
        if path == nil, let credentials = Environment.value("CREDENTIALS_DIRECTORY"),
           FileManager.default.fileExists(atPath: credentials + "/inventory-password") {
            path = credentials + "/inventory-password"
        }
        guard let path else { return nil }
        return try SecretSource.read(path, what: "inventory password")
    }
}
