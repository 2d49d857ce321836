//! Latency statistics: nearest-rank percentiles over a sample of durations.

use serde::{Deserialize, Serialize};

/// Summary of one series of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// How many latencies.
    pub n: usize,
    /// The smallest.
    pub min_ms: f64,
    /// The median (nearest rank).
    pub p50_ms: f64,
    /// The 95th percentile (nearest rank).
    pub p95_ms: f64,
    /// The 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// The largest.
    pub max_ms: f64,
    /// The arithmetic mean.
    pub mean_ms: f64,
}

/// Nearest-rank percentile `p` (0–100) of an ascending, non-empty slice.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of an empty sample");
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises a sample of milliseconds; `None` when it is empty.
pub fn summarize(samples_ms: &[f64]) -> Option<Summary> {
    if samples_ms.is_empty() {
        return None;
    }
    let mut s = samples_ms.to_vec();
    s.sort_by(f64::total_cmp);
    Some(Summary {
        n: s.len(),
        min_ms: s[0],
        p50_ms: percentile(&s, 50.0),
        p95_ms: percentile(&s, 95.0),
        p99_ms: percentile(&s, 99.0),
        max_ms: s[s.len() - 1],
        mean_ms: s.iter().sum::<f64>() / s.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nearest_rank_table() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        for (p, want) in [
            (0.0, 1.0),
            (1.0, 1.0),
            (50.0, 50.0),
            (95.0, 95.0),
            (99.0, 99.0),
            (100.0, 100.0),
        ] {
            assert_eq!(percentile(&s, p), want, "p{p}");
        }
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[1.0, 2.0], 50.0), 1.0);
    }

    #[test]
    fn summary_of_unsorted_input() {
        let s = summarize(&[3.0, 1.0, 2.0, 4.0]).unwrap();
        assert_eq!(
            (s.n, s.min_ms, s.p50_ms, s.max_ms, s.mean_ms),
            (4, 1.0, 2.0, 4.0, 2.5)
        );
        assert!(summarize(&[]).is_none());
    }

    proptest! {
        #[test]
        fn percentiles_are_ordered_members(v in proptest::collection::vec(0.0f64..1e6, 1..200)) {
            let s = summarize(&v).unwrap();
            prop_assert!(s.min_ms <= s.p50_ms && s.p50_ms <= s.p95_ms && s.p95_ms <= s.p99_ms && s.p99_ms <= s.max_ms);
            prop_assert!(v.contains(&s.p50_ms) && v.contains(&s.p99_ms));
        }
    }
}
