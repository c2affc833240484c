import Foundation
import TextFormats

/// A value a setting takes, written the same way on the command line, in an environment
/// variable and in the supervisor's YAML.
public protocol SettingValue: Sendable, Equatable {
    init?(settingText: String)
    /// The text `init?(settingText:)` reads back as this value.
    var settingText: String { get }
    /// What a valid text looks like, for error messages.
    static var expected: String { get }
}

extension String: SettingValue {
    public init?(settingText: String) {
        guard !settingText.isEmpty else { return nil }
        self = settingText
    }
    public var settingText: String { self }
    public static var expected: String { "a non-empty text" }
}

extension Int: SettingValue {
    public init?(settingText: String) { self.init(settingText.trimmingCharacters(in: .whitespaces)) }
    public var settingText: String { String(self) }
    public static var expected: String { "a whole number" }
}

extension Duration: SettingValue {
    public init?(settingText: String) {
        guard let duration = DurationText.parse(settingText) else { return nil }
        self = duration
    }
    public var settingText: String { DurationText.format(self) }
    public static var expected: String { DurationText.expected }
}

/// A setting's text was not a valid value. `message` names where it came from (the flag, the
/// variable or the YAML key), the text, and what was expected.
public struct SettingError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// Where a setting's text came from, for its error message.
public enum SettingSource: Sendable {
    case commandLine
    case environment
    /// A YAML key, with its path (`gateway.journal_sync`).
    case file(path: String)
}

/// What every setting has, whatever its value's type: the names it goes by and how to check
/// a text for it. The supervisor's YAML reader and the `--help` texts work on this.
public protocol AnySetting: Sendable {
    /// The long option without its dashes: `journal-sync`.
    var flag: String { get }
    /// The environment variable read when the flag is not given, if any.
    var variable: String? { get }
    var summary: String { get }
    var valueName: String { get }
    /// The default as `--help` shows it; nil when there is nothing to say.
    var defaultText: String? { get }
    /// The default as a command-line value; nil for a setting that may stay unset.
    var defaultArgument: String? { get }
    /// The problem with `text` as this setting's value, or nil when it is valid.
    func problem(with text: String, from source: SettingSource) -> String?
}

extension AnySetting {
    /// `--journal-sync`.
    public var option: String { "--" + flag }
    /// The supervisor's YAML key: the flag with underscores (`journal_sync`).
    public var yamlKey: String { flag.replacingOccurrences(of: "-", with: "_") }
    /// The help text: the summary, then the variable and the default it was defined with.
    public var help: String {
        var text = summary
        if let variable { text += " Env: \(variable)." }
        if let defaultText { text += " Default: \(defaultText)." }
        return text
    }

    func name(in source: SettingSource) -> String {
        switch source {
        case .commandLine: option
        case .environment: variable ?? option
        case .file(let path): path
        }
    }
}

/// A setting whose value has a type: how a text becomes that value, and the rule it must meet.
public protocol TypedSetting<Value>: AnySetting {
    associatedtype Value: SettingValue
    /// Returns what is wrong with a parsed value ("must be positive"), or nil.
    var rule: @Sendable (Value) -> String? { get }
}

extension TypedSetting {
    /// The value `text` stands for, or an error naming `source`, the text and what was expected.
    public func parse(_ text: String, from source: SettingSource) throws(SettingError) -> Value {
        // The text is printed escaped: it may hold anything a file or variable does.
        let name = name(in: source), shown = Printable.escaped(text)
        guard let value = Value(settingText: text) else {
            throw SettingError(message: "\(name) '\(shown)' is not \(Value.expected)")
        }
        if let problem = rule(value) {
            throw SettingError(message: "\(name) '\(shown)' \(problem)")
        }
        return value
    }

    public func problem(with text: String, from source: SettingSource) -> String? {
        do {
            _ = try parse(text, from: source)
            return nil
        } catch {
            return error.message
        }
    }

    /// The flag's text if given, else the environment variable's (empty counts as unset); nil
    /// when neither.
    func given(_ commandLine: String?, environment: [String: String]?) throws(SettingError) -> Value? {
        if let commandLine { return try parse(commandLine, from: .commandLine) }
        if let variable, let text = (environment ?? ProcessInfo.processInfo.environment)[variable], !text.isEmpty {
            return try parse(text, from: .environment)
        }
        return nil
    }

    /// The command-line arguments that set `value`.
    public func arguments(_ value: Value) -> [String] { [option, value.settingText] }
}

/// One setting with a default, defined once: its flag (from which the YAML key follows), its
/// environment variable, its default and its rule. The command line, the configuration
/// structs and the supervisor's YAML all take these from here, so they cannot disagree.
public struct Setting<Value: SettingValue>: TypedSetting {
    public let flag: String
    public let variable: String?
    public let summary: String
    public let valueName: String
    public let defaultValue: Value
    public let rule: @Sendable (Value) -> String?

    public init(
        _ flag: String, default defaultValue: Value, variable: String? = nil, valueName: String,
        rule: @escaping @Sendable (Value) -> String? = { _ in nil }, _ summary: String
    ) {
        self.flag = flag
        self.variable = variable
        self.summary = summary
        self.valueName = valueName
        self.defaultValue = defaultValue
        self.rule = rule
    }

    public var defaultText: String? { defaultValue.settingText }
    public var defaultArgument: String? { defaultValue.settingText }

    /// The flag's text if given, else the environment variable's (of `environment`, or the
    /// process's), else the default.
    public func value(
        _ commandLine: String?, environment: [String: String]? = nil
    ) throws(SettingError) -> Value {
        try given(commandLine, environment: environment) ?? defaultValue
    }
}

/// A setting that may stay unset (a file that is not there unless named, a feature that is
/// off unless asked for).
public struct OptionalSetting<Value: SettingValue>: TypedSetting {
    public let flag: String
    public let variable: String?
    public let summary: String
    public let valueName: String
    /// What unset means, as `--help` shows it ("off", "the host name"); nil: nothing to say.
    public let defaultText: String?
    public let rule: @Sendable (Value) -> String?

    public init(
        _ flag: String, unset defaultText: String? = nil, variable: String? = nil, valueName: String,
        rule: @escaping @Sendable (Value) -> String? = { _ in nil }, _ summary: String
    ) {
        self.flag = flag
        self.variable = variable
        self.summary = summary
        self.valueName = valueName
        self.defaultText = defaultText
        self.rule = rule
    }

    public var defaultArgument: String? { nil }

    /// The flag's text if given, else the environment variable's, else nil.
    public func value(
        _ commandLine: String?, environment: [String: String]? = nil
    ) throws(SettingError) -> Value? {
        try given(commandLine, environment: environment)
    }
}

/// Rules settings share.
public enum SettingRule {
    public static let positive: @Sendable (Duration) -> String? = { $0 > .zero ? nil : "must be positive" }
    public static func within(_ range: ClosedRange<Int>) -> @Sendable (Int) -> String? {
        { range.contains($0) ? nil : "must be \(range.lowerBound) to \(range.upperBound)" }
    }
    public static func atLeast(_ minimum: Int) -> @Sendable (Int) -> String? {
        { $0 >= minimum ? nil : "must be at least \(minimum)" }
    }
    public static func oneOf(_ choices: [String]) -> @Sendable (String) -> String? {
        { choices.contains($0.lowercased()) ? nil : "must be one of \(choices.joined(separator: ", "))" }
    }
}
