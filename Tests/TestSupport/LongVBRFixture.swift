import Foundation

/// A 20-minute VBR MP3 (a tone under pink noise with a slow swell, so frame sizes vary), made
/// with ffmpeg/libmp3lame once per machine (about 7 s) and kept in the temporary directory: too
/// large to commit, long enough that indexing all of it is visibly more than a clip needs.
public enum LongVBRFixture {
    public static let path: Result<String, any Error> = Result {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("clipproxy-progressive-vbr-v1")
        let path = directory.appendingPathComponent("long_vbr.mp3").path
        if FileManager.default.fileExists(atPath: path) { return path }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // Written under a unique name and renamed: parallel tests or runs never see half a file.
        let partial = directory.appendingPathComponent("long_vbr-\(UUID().uuidString).mp3").path
        let ffmpeg = Process()
        ffmpeg.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        ffmpeg.arguments = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                            "-f", "lavfi", "-i", "sine=f=440:d=1200", "-f", "lavfi", "-i", "anoisesrc=d=1200:c=pink:a=0.08",
                            "-filter_complex", "[0][1]amix=inputs=2,volume='0.5+0.5*sin(2*PI*t/17)':eval=frame",
                            "-ac", "1", "-ar", "44100", "-codec:a", "libmp3lame", "-q:a", "5", "-f", "mp3", partial]
        try ffmpeg.run()
        ffmpeg.waitUntilExit()
        guard ffmpeg.terminationStatus == 0 else { throw TestSetupError("ffmpeg could not make the long VBR source (is ffmpeg installed? `make test` installs it)") }
        guard rename(partial, path) == 0 else { throw TestSetupError("cannot move \(partial) into place") }
        return path
    }
}
