import Foundation

/// VBR MP3s (a tone under pink noise with a slow swell, so frame sizes vary), made with
/// ffmpeg/libmp3lame once per machine and kept in the temporary directory: too large to commit.
public enum LongVBRFixture {
    /// 20 minutes (about 7 s to make), long enough that indexing all of it is visibly more than a
    /// clip needs.
    public static let path: Result<String, any Error> = Result { try make("long_vbr", seconds: 1200, quality: 5) }

    /// 3 minutes, about 1.76 MB (issue 21's VBR episode was 3 minutes and 1.72 MB).
    public static let threeMinutes: Result<String, any Error> = Result { try make("vbr_3min_q3", seconds: 180, quality: 3) }

    /// The file `name`.mp3: mono, 44.1 kHz, `seconds` long, LAME VBR quality `quality` (0 best, 9 smallest).
    static func make(_ name: String, seconds: Int, quality: Int) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("clipproxy-progressive-vbr-v1")
        let path = directory.appendingPathComponent("\(name).mp3").path
        if FileManager.default.fileExists(atPath: path) { return path }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // Written under a unique name and renamed: parallel tests or runs never see half a file.
        let partial = directory.appendingPathComponent("\(name)-\(UUID().uuidString).mp3").path
        let ffmpeg = Process()
        ffmpeg.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        ffmpeg.arguments = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                            "-f", "lavfi", "-i", "sine=f=440:d=\(seconds)", "-f", "lavfi", "-i", "anoisesrc=d=\(seconds):c=pink:a=0.08",
                            "-filter_complex", "[0][1]amix=inputs=2,volume='0.5+0.5*sin(2*PI*t/17)':eval=frame",
                            "-ac", "1", "-ar", "44100", "-codec:a", "libmp3lame", "-q:a", String(quality), "-f", "mp3", partial]
        try ffmpeg.run()
        ffmpeg.waitUntilExit()
        guard ffmpeg.terminationStatus == 0 else { throw TestSetupError("ffmpeg could not make the VBR source \(name) (is ffmpeg installed? `make test` installs it)") }
        guard rename(partial, path) == 0 else { throw TestSetupError("cannot move \(partial) into place") }
        return path
    }
}
