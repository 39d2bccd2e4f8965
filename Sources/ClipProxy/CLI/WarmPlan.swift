/// One soundbite to warm: the clip the running server is asked for.
struct SoundbiteJob: Sendable {
    /// Its place in the feed: reports list failures in feed order, whatever order they finished in.
    let index: Int
    let item: String
    let guid: String
    /// `startTime` as the feed wrote it, so reports use the feed's own words.
    let startTime: String
    let startMs: Int64
    let durationMs: Int64
    /// The soundbite's own length, longer than `durationMs` when capped.
    let askedMs: Int64

    var capped: Bool { durationMs < askedMs }
    var name: String { "\(item), soundbite at \(startTime) s" }
}

/// What a feed's items come to: the clips to request, and what to tell the user first.
struct WarmPlan {
    var jobs: [SoundbiteJob] = []
    /// Items without a guid and capped soundbites: said before the run, not failures.
    var warnings: [String] = []
    /// Soundbites whose attributes cannot be a clip; never requested, and they fail the run.
    var invalid: [String] = []
    /// Items that have at least one soundbite.
    var itemsWithSoundbites = 0

    init(items: [FeedItem], maxDurationMs: Int64) {
        for item in items where !item.soundbites.isEmpty {
            itemsWithSoundbites += 1
            guard let guid = item.guid else {
                warnings.append("\(item.name) has no <guid>: skipped, with its \(ToolOutput.count(item.soundbites.count, "soundbite")) "
                                + "(the guid is how an item is matched to an episode)")
                continue
            }
            guard !guid.contains("/") else {
                // URL-shaped guids are common in feeds, but a /clips episode id cannot hold a "/":
                // said once per item, before any request, instead of a 400 per soundbite.
                invalid.append("\(item.name): its guid \(guid) contains \"/\", which a /clips episode id cannot hold; "
                               + "its \(ToolOutput.count(item.soundbites.count, "soundbite")) need the episode's ObjectId instead")
                continue
            }
            for soundbite in item.soundbites {
                switch soundbite.timing {
                case .invalid(let reason):
                    invalid.append("\(item.name), soundbite at line \(soundbite.line): \(reason)")
                case .clip(let startMs, let askedMs):
                    let job = SoundbiteJob(index: jobs.count, item: item.name, guid: guid, startTime: soundbite.startTime, startMs: startMs,
                                           durationMs: min(askedMs, maxDurationMs), askedMs: askedMs)
                    if job.capped {
                        warnings.append("\(job.name) lasts \(askedMs) ms; warming the first \(maxDurationMs) ms "
                                        + "(clips.max_duration_ms, the longest clip the server cuts)")
                    }
                    jobs.append(job)
                }
            }
        }
    }
}
