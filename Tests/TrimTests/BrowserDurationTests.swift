import Foundation
import Testing
import TestSupport
@testable import Trim

/// Browsers read a clip's duration from its Info/Xing frame (issue: Trim, acceptance 5).
@Suite("Trim: Chromium plays clips at their exact duration")
struct BrowserDurationTests {
    @Test("<audio src=clip> reports 30 s (± 0.1 s) for CBR, VBR, MPEG-2, deep-reservoir and tagged sources")
    func chromiumReportsDuration() throws {
        let work = try TemporaryDirectory("browser")
        defer { work.remove() }
        let cases: [(fixture: String, startMs: Int64)] = [
            ("m1_44k_stereo_cbr128", 0), ("m1_44k_stereo_cbr128", 20_013), ("m1_32k_stereo_vbr", 12_345),
            ("m2_22k_mono_cbr32", 7_777), ("m2_24k_stereo_vbr", 30_001), ("m1_44k_lowrate_vbr", 5),
            ("m1_44k_id3x2_ape", 31_000), ("m25_11k_mono_cbr16", 1_000),
        ]
        var elements = ""
        for (i, c) in cases.enumerated() {
            let fixture = try Fixtures.named(c.fixture)
            let source = try FileByteSource(path: fixture.path)
            let index = try FrameIndexBuilder.build(source)
            var clip: [UInt8] = []
            try Trimmer.trim(source, index: index, request: .init(startMs: c.startMs, durationMs: 30_000)) { clip.append(contentsOf: $0) }
            _ = FileManager.default.createFile(atPath: work.url.appendingPathComponent("clip\(i).mp3").path, contents: Data(clip))
            elements += "<audio preload=\"metadata\" data-i=\"\(i)\" src=\"clip\(i).mp3\"></audio>\n"
        }
        let page = """
        <!doctype html><html><body><pre id="out"></pre>
        \(elements)
        <script>
        const results = {};
        const out = document.getElementById('out');
        document.querySelectorAll('audio').forEach(a => {
          const done = v => {
            results[a.dataset.i] = v;
            out.textContent = JSON.stringify(results);
            if (Object.keys(results).length === \(cases.count)) out.dataset.done = '1';
          };
          a.addEventListener('loadedmetadata', () => done(a.duration));
          a.addEventListener('error', () => done('error ' + (a.error && a.error.code)));
        });
        </script></body></html>
        """
        let url = try BrowserPage.write(page, in: work)
        let (results, json) = try BrowserPage.results(in: try Browser.chromium.dumpDOM(of: url, until: BrowserPage.done))
        print("Chromium durations: \(json)")
        #expect(results.count == cases.count, "every clip reported: \(json)")
        for (i, c) in cases.enumerated() {
            let duration = results[String(i)] as? Double
            #expect(duration.map { abs($0 - 30) <= 0.1 } == true, "\(c.fixture) @\(c.startMs): Chromium says \(String(describing: results[String(i)]))")
        }
    }
}
