import Foundation
import Testing
import TestSupport
@testable import ClipProxy

/// The repository documents itself: every configuration key is in docs/CONFIGURATION.md and in
/// conf/clipproxy.yaml, and no file points at documents outside the repository.
@Suite("Documentation: every key documented, nothing outside the repository referred to")
struct DocumentationTests {
    static func text(_ relativePath: String) throws -> String {
        let url = RepoPaths.root.appendingPathComponent(relativePath)
        let path = try RepoPaths.require(url, hint: "it is part of the repository").path
        return try String(contentsOfFile: path, encoding: .utf8)
    }

    @Test("Every configuration key, with its environment variable, is in docs/CONFIGURATION.md and conf/clipproxy.yaml")
    func everyKeyDocumented() throws {
        let page = try Self.text("docs/CONFIGURATION.md")
        let example = try Self.text("conf/clipproxy.yaml")
        let exampleKeys = try Configuration.flatten(example, file: "conf/clipproxy.yaml")
        for key in Configuration.keys {
            #expect(page.contains("`\(key.name)`") && page.contains("`\(key.environmentVariable)`"),
                    "\(key.name) (\(key.environmentVariable)) is missing from docs/CONFIGURATION.md")
            #expect(exampleKeys[key.name] != nil && example.contains(key.environmentVariable),
                    "\(key.name) (\(key.environmentVariable)) is missing from conf/clipproxy.yaml")
        }
    }

    @Test("docs/ links resolve to files in the repository")
    func documentationLinksResolve() throws {
        for page in ["docs/ARCHITECTURE.md", "docs/CONFIGURATION.md", "docs/OPERATIONS.md"] {
            let text = try Self.text(page)
            let base = RepoPaths.root.appendingPathComponent(page).deletingLastPathComponent()
            // Markdown links with a relative target: ](target) or ](target#anchor).
            for match in text.matches(of: /\]\(([^)#:\s]+)(#[^)]*)?\)/) {
                let target = base.appendingPathComponent(String(match.1)).standardizedFileURL.path
                #expect(FileManager.default.fileExists(atPath: target), "\(page) links to \(match.1), which does not exist")
            }
        }
    }

    /// Strings that point at documents kept outside the repository. Built from pieces so that
    /// this file does not match them itself.
    static let outsideReferences = ["../" + "shared", "shared/" + "design", "design" + ".md"]

    /// Binary media: they cannot refer to documents, and their bytes may match by chance.
    static let mediaExtensions: Set<String> = ["png", "jpg", "jpeg", "gif", "webp", "svg", "ico", "pdf", "mp3", "wav",
                                               "ogg", "opus", "flac", "m4a", "aac", "mp4", "webm"]

    /// Lines exempt from the check: history notes in docs/ (`> History: ...`), which say what
    /// the documents replaced without sending anyone there.
    static func isHistoryNote(_ line: Substring, in file: String) -> Bool {
        file.hasPrefix("docs/") && line.hasPrefix("> History:")
    }

    /// Tracked files, plus new files not yet committed (so a reference cannot slip in unnoticed).
    static func repositoryFiles() throws -> [String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["git", "-C", RepoPaths.root.path, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestSetupError("git ls-files failed in \(RepoPaths.root.path): \(String(decoding: errors, as: UTF8.self))")
        }
        return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test("No file in the repository refers to documents outside it")
    func nothingRefersOutside() throws {
        let files = try Self.repositoryFiles()
        #expect(files.contains("Package.swift"), "git ls-files listed \(files.count) files, not the repository")
        var offenders: [String] = []
        for file in files where !Self.mediaExtensions.contains((file as NSString).pathExtension.lowercased()) {
            // Listed but deleted in the working tree: nothing to check.
            guard let data = FileManager.default.contents(atPath: RepoPaths.root.appendingPathComponent(file).path) else { continue }
            let text = String(decoding: data, as: UTF8.self)
            let lowered = text.lowercased()
            guard Self.outsideReferences.contains(where: { lowered.contains($0) }) else { continue }
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let lowered = line.lowercased()
                if Self.outsideReferences.contains(where: { lowered.contains($0) }) && !Self.isHistoryNote(line, in: file) {
                    offenders.append("\(file):\(number + 1): \(line.trimmingCharacters(in: .whitespaces))")
                }
            }
        }
        #expect(offenders.isEmpty, "references to documents outside the repository:\n\(offenders.joined(separator: "\n"))")
    }

    @Test("No file carries a merge-conflict marker")
    func noConflictMarkers() throws {
        var offenders: [String] = []
        for file in try Self.repositoryFiles() where !Self.mediaExtensions.contains((file as NSString).pathExtension.lowercased()) {
            guard let data = FileManager.default.contents(atPath: RepoPaths.root.appendingPathComponent(file).path) else { continue }
            for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where line.hasPrefix("<<<<<<< ") || line.hasPrefix(">>>>>>> ") {
                offenders.append("\(file):\(number + 1)")
            }
        }
        #expect(offenders.isEmpty, "conflict markers at \(offenders)")
    }
}
