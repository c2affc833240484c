/// Settings given in a configuration file, by flag, as checked text; the rest keep their
/// defaults. What the supervisor holds for a child, and turns into its command line.
public struct SettingValues: Sendable, Equatable {
    private var texts: [String: String] = [:]

    public init() {}

    /// Sets `text` for `setting` when it is a valid value; else returns the problem.
    public mutating func set(_ text: String, for setting: any AnySetting, at path: String) -> String? {
        if let problem = setting.problem(with: text, from: .file(path: path)) { return problem }
        texts[setting.flag] = text
        return nil
    }

    public subscript<Value>(_ setting: Setting<Value>) -> Value {
        get { texts[setting.flag].flatMap(Value.init(settingText:)) ?? setting.defaultValue }
        set { texts[setting.flag] = newValue.settingText }
    }

    public subscript<Value>(_ setting: OptionalSetting<Value>) -> Value? {
        get { texts[setting.flag].flatMap(Value.init(settingText:)) }
        set { texts[setting.flag] = newValue?.settingText }
    }

    public func isSet(_ setting: any AnySetting) -> Bool { texts[setting.flag] != nil }

    /// The command-line arguments of `settings`, in their order: those set, and those in
    /// `always` with their defaults (so the child's command line shows them; a setting without
    /// a default is left out while unset).
    public func arguments(of settings: [any AnySetting], always: [any AnySetting] = []) -> [String] {
        let shown = Set(always.map(\.flag))
        return settings.flatMap { setting -> [String] in
            if let text = texts[setting.flag] { return [setting.option, text] }
            if shown.contains(setting.flag), let text = setting.defaultArgument { return [setting.option, text] }
            return []
        }
    }
}
