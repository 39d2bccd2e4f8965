import Foundation

/// Where in a stretch of decoded audio a clip boundary can fall between words: the vocabulary of
/// ffmpeg's silencedetect (a level below a threshold for a minimum time), but with the threshold
/// taken from the stretch itself, so a quiet recording and a loud one are judged alike.
///
/// The level is the RMS of 20 ms windows every 5 ms, in dB below full scale. A window is quiet
/// when it is at least 20 dB under the stretch's speech level (its 90th percentile) and within
/// 10 dB of its quietest window (or 35 dB under the speech level, whichever is higher, so the
/// dither inside a digital silence does not break it up). A pause is a run of quiet windows
/// covering at least 60 ms of audio: longer than the stop consonants inside words (30-50 ms of
/// closure), shorter than the gaps between words of a deliberate speaker (80 ms and up).
/// Without a 20 dB contrast (music, crosstalk, a stretch that is silence throughout) there is
/// no pause: the boundary stays where it was asked.
public enum PauseFinder {
    public static let windowMs = 20
    public static let hopMs = 5
    public static let minimumPauseMs = 60
    /// How far under the speech level the quietest moment must be to count as a pause at all.
    public static let contrastDb = 20.0
    /// The quietest windows and those within this much of them make up a pause.
    public static let pauseSpreadDb = 10.0
    /// A window this far under the speech level is quiet whatever the quietest one is.
    public static let surelyQuietDb = 35.0
    /// Below this the stretch is silence throughout (or nearly): nothing to choose between.
    public static let silenceFloorDb = -60.0

    /// The sample of `samples` to cut at: inside the longest pause that has a window centre in
    /// `allowed`, at the one nearest `asked` (so the cut has at least half a window of quiet on
    /// each side). Nil when no pause qualifies. Ties go to the pause nearer `asked`, then the
    /// earlier one, so the answer depends on the samples alone.
    public static func cutPoint(in samples: [Int16], sampleRate: Int, asked: Int, allowed: ClosedRange<Int>) -> Int? {
        let window = max(1, sampleRate * windowMs / 1000), hop = max(1, sampleRate * hopMs / 1000)
        guard samples.count >= window else { return nil }
        let levels = self.levels(samples, window: window, hop: hop)
        let sorted = levels.sorted()
        let speech = sorted[min(sorted.count - 1, sorted.count * 9 / 10)]
        let quietest = sorted[0]
        guard speech > silenceFloorDb, speech - quietest >= contrastDb else { return nil }
        let threshold = min(max(quietest + pauseSpreadDb, speech - surelyQuietDb), speech - contrastDb)
        let centre = { (position: Int) in position * hop + window / 2 }
        let minimumWindows = max(1, (sampleRate * minimumPauseMs / 1000 - window) / hop + 1)

        var best: (length: Int, distance: Int, cut: Int)?
        var position = 0
        while position < levels.count {
            guard levels[position] <= threshold else { position += 1; continue }
            var end = position
            while end + 1 < levels.count, levels[end + 1] <= threshold { end += 1 }
            defer { position = end + 1 }
            let length = end - position + 1
            // Only the centres inside `allowed` may be cut at.
            let low = max(centre(position), allowed.lowerBound), high = min(centre(end), allowed.upperBound)
            guard length >= minimumWindows, low <= high else { continue }
            let cut = min(max(asked, low), high)
            let distance = abs(cut - asked)
            if let current = best, current.length > length || (current.length == length && current.distance <= distance) { continue }
            best = (length, distance, cut)
        }
        return best?.cut
    }

    /// dBFS of each window (`window` samples, every `hop`), from running sums of squares.
    static func levels(_ samples: [Int16], window: Int, hop: Int) -> [Double] {
        var energy = [Double](repeating: 0, count: samples.count + 1)
        for (i, sample) in samples.enumerated() { energy[i + 1] = energy[i] + Double(sample) * Double(sample) }
        return stride(from: 0, through: samples.count - window, by: hop).map { start in
            let meanSquare = (energy[start + window] - energy[start]) / Double(window)
            // Floor at one LSB of RMS: digital silence is -90 dBFS, not minus infinity.
            return 20 * log10(max(meanSquare.squareRoot(), 1) / 32768)
        }
    }
}
