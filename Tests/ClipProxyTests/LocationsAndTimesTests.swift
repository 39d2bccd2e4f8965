import Index
import Testing
import Upstream
@testable import ClipProxy

@Suite("Second-tier locations and first-cut times")
struct LocationsAndTimesTests {
    static func episode(guid: String, feed: String = "feed") -> ResolvedEpisode {
        ResolvedEpisode(episodeId: "685ba776e4f9ec2f0756267a", guid: guid, feedSlug: feed, sourceKey: "k", etag: "e", size: 1)
    }

    @Test("A guid from a feed cannot lead a location out of the clip directory")
    func noDotSegments() {
        let template = "{feed_slug}/{guid}/{start_ms}-{end_ms}.mp3"
        #expect(ClipKeyTemplate.expand(template, episode: Self.episode(guid: "a/../../etc/x"), startMs: 1, endMs: 2)
                == "feed/a/%2E%2E/%2E%2E/etc/x/1-2.mp3")
        #expect(ClipKeyTemplate.expand(template, episode: Self.episode(guid: "..", feed: "."), startMs: 1, endMs: 2) == "%2E/%2E%2E/1-2.mp3")
        // Everything else is kept as the old system's keys have it: dots inside names, slashes.
        #expect(ClipKeyTemplate.expand(template, episode: Self.episode(guid: "https://x.org/?p=1..2"), startMs: 1, endMs: 2)
                == "feed/https://x.org/?p=1..2/1-2.mp3")
        #expect(ClipKeyTemplate.episodePrefix(template, episode: Self.episode(guid: "../up")) == "feed/%2E%2E/up/")
    }

    @Test("A clip's first cut time holds for five minutes, then is forgotten; a storm of keys evicts the oldest first")
    func firstCuts() {
        var cuts = FirstCuts()
        let a = ClipKey(identity: "a"), b = ClipKey(identity: "b")
        #expect(cuts.time(of: a, now: 1_000) == 1_000)
        #expect(cuts.time(of: a, now: 2_500) == 1_000, "the probe's time, not the fill's")
        #expect(cuts.time(of: b, now: 3_000) == 3_000)
        #expect(cuts.time(of: a, now: 1_000 + FirstCuts.memoryMs) == 1_000 + FirstCuts.memoryMs, "forgotten after the memory")
        var storm = FirstCuts()
        let first = ClipKey(identity: "first")
        _ = storm.time(of: first, now: 0)
        for i in 0..<FirstCuts.limit { _ = storm.time(of: ClipKey(identity: "k\(i)"), now: 1) }
        #expect(storm.time(of: first, now: 2) == 2, "the oldest went first")
        #expect(storm.time(of: ClipKey(identity: "k\(FirstCuts.limit - 1)"), now: 3) == 1, "the newest are kept")
    }
}
