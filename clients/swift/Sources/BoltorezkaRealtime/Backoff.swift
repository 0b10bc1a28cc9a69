import Foundation

/// Exponential backoff with full jitter: attempt `n` waits a uniformly random time between
/// zero and `min(maximum, initial · 2ⁿ)`. Full jitter spreads a crowd of clients that lost
/// the same node, instead of having them return in waves.
public struct Backoff: Sendable, Hashable {
    public var initial: Duration
    public var maximum: Duration

    public init(initial: Duration = .milliseconds(250), maximum: Duration = .seconds(30)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The ceiling of attempt `attempt` (0-based), before jitter.
    public func ceiling(attempt: Int) -> Duration {
        let factor = pow(2.0, Double(min(max(attempt, 0), 62)))
        let seconds = min(initial.seconds * factor, maximum.seconds)
        return .milliseconds(Int64(seconds * 1000))
    }

    /// The wait before attempt `attempt`; `unit` is a random number in `0..<1`.
    public func delay(attempt: Int, unit: Double) -> Duration {
        .milliseconds(Int64(ceiling(attempt: attempt).seconds * 1000 * min(max(unit, 0), 1)))
    }

    public func delay(attempt: Int) -> Duration {
        delay(attempt: attempt, unit: Double.random(in: 0..<1))
    }
}

extension Duration {
    /// This duration in (fractional) seconds.
    public var seconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}
