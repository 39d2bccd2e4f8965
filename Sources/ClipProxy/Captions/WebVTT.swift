/// Writes cues as a WebVTT file (W3C WebVTT, the format `<track>` elements load).
enum WebVTT {
    static let contentType = "text/vtt; charset=utf-8"

    /// The header, then each cue as a timing line and one line of text. No cues: just the header,
    /// which is a valid, empty track. A cue with nothing to show is left out.
    static func document(_ cues: [CaptionCue]) -> String {
        var out = "WEBVTT\n"
        for cue in cues {
            let text = cueText(cue.text)
            guard !text.isEmpty else { continue }
            out += "\n\(timestamp(cue.startMs)) --> \(timestamp(cue.endMs))\n\(text)\n"
        }
        return out
    }

    /// `HH:MM:SS.mmm` (hours grow past two digits if they must).
    static func timestamp(_ milliseconds: Int64) -> String {
        let ms = max(0, milliseconds)
        let hours = ms / 3_600_000, minutes = ms / 60_000 % 60, seconds = ms / 1000 % 60, fraction = ms % 1000
        return "\(padded(hours, 2)):\(padded(minutes, 2)):\(padded(seconds, 2)).\(padded(fraction, 3))"
    }

    /// Cue text as plain text on one line: `&`, `<` and `>` escaped (so markup and `-->` in a
    /// transcript are shown, never parsed), and line breaks and control characters turned into
    /// single spaces (a blank line would end the cue early).
    static func cueText(_ text: String) -> String {
        var out = ""
        var pendingSpace = false
        for scalar in text.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7F || scalar == "\u{2028}" || scalar == "\u{2029}" || scalar == " " {
                pendingSpace = !out.isEmpty
                continue
            }
            if pendingSpace { out += " " }
            pendingSpace = false
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    private static func padded(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
