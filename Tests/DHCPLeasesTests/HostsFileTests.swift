import DHCPLeases
import Foundation
import Testing

@Suite("Hosts file")
struct HostsFileTests {
    func withDirectory(_ body: (String) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hosts-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer {
            chmod(directory, 0o755)
            try? FileManager.default.removeItem(atPath: directory)
        }
        try body(directory)
    }

    @Test("entries come out in numeric IP order, duplicates once, with a header and no timestamp")
    func render() {
        let text = HostsFile.render([
            .init(ip: "10.0.0.10", name: "vps-b"), .init(ip: "10.0.0.9", name: "vps-a"), .init(ip: "10.0.0.10", name: "vps-b"),
        ])
        let lines = text.split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(lines == ["10.0.0.9 vps-a", "10.0.0.10 vps-b"])
        #expect(HostsFile.render([.init(ip: "10.0.0.9", name: "vps-a")]) == HostsFile.render([.init(ip: "10.0.0.9", name: "vps-a")]))
    }

    @Test("a name that is not a DNS label, or an address that is not an IP, never reaches the file", arguments: [
        "vps-x\n10.9.9.9 www.bank.example", "vps x", "-vps", "vps-", "", String(repeating: "a", count: 64), "vps_1", "vps.example",
    ])
    func injectionRefused(name: String) {
        let text = HostsFile.render([.init(ip: "10.0.0.1", name: name), .init(ip: "10.0.0.2 10.9.9.9", name: "vps-ok"), .init(ip: "10.0.0.3", name: "vps-3")])
        let lines = text.split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(lines == ["10.0.0.3 vps-3"], "\(lines)")
    }

    @Test("the file is written only when its content changes")
    func writesOnChange() throws {
        try withDirectory { directory in
            let hosts = HostsFile(path: directory + "/hosts")
            let wrote = [try hosts.replace(with: "a\n"), try hosts.replace(with: "a\n"), try hosts.replace(with: "b\n")]
            #expect(wrote == [true, false, true])
            let content = try String(contentsOfFile: directory + "/hosts", encoding: .utf8)
            #expect(content == "b\n")
            // No temp files left behind.
            let files = try FileManager.default.contentsOfDirectory(atPath: directory)
            #expect(files == ["hosts"])
        }
    }

    @Test("a directory where the hosts file should be is a clear error")
    func directoryInTheWay() throws {
        try withDirectory { directory in
            try FileManager.default.createDirectory(atPath: directory + "/hosts", withIntermediateDirectories: false)
            #expect {
                try HostsFile(path: directory + "/hosts").replace(with: "a\n")
            } throws: { "\($0)".contains("is a directory") }
        }
    }

    @Test("an unwritable directory is a clear error and the previous file stays intact")
    func unwritable() throws {
        try withDirectory { directory in
            let hosts = HostsFile(path: directory + "/hosts")
            try hosts.replace(with: "old\n")
            // Root ignores directory permissions, so make the temp file's name a directory
            // instead: creating it fails the same way for everyone.
            let temporary = directory + "/.hosts.\(getpid()).tmp"
            try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: false)
            #expect {
                try hosts.replace(with: "new\n")
            } throws: { "\($0)".contains("the previous one is unchanged") }
            let content = try String(contentsOfFile: directory + "/hosts", encoding: .utf8)
            #expect(content == "old\n")
        }
    }
}
