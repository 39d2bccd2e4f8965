extension Duration {
    /// The duration in whole milliseconds (rounded toward zero), for logs, JSON and C APIs.
    public var wholeMilliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }

    /// The duration in whole microseconds (rounded toward zero), for logs of sub-millisecond steps.
    public var wholeMicroseconds: Int64 {
        components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000
    }
}
