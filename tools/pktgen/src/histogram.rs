//! The sink's one-way latency histogram: log-linear buckets, 16 per power of two (HDR
//! histogram's layout at 4 significant bits), so every bucket is at most 1/16 (6.25%) of its
//! values wide and percentiles carry that precision from nanoseconds up to 2^48 ns.
//!
//! [`bucket`] is the function `bpf/sink.bpf.c` computes (`latency_bucket`);
//! [`bucket_range`] inverts it. A percentile is reported as the middle of the bucket it falls
//! in (exact below 16 ns).

/// Bits of sub-bucket precision.
pub const SUB_BITS: u32 = 4;
/// Buckets per power of two.
pub const SUB_BUCKETS: u64 = 1 << SUB_BITS;
/// The largest power of two with buckets of its own; larger values share the last bucket.
pub const MAX_EXP: u32 = 47;
/// Buckets in the histogram (`PKTGEN_LATENCY_BUCKETS`).
pub const BUCKETS: usize = (SUB_BUCKETS + (MAX_EXP - SUB_BITS + 1) as u64 * SUB_BUCKETS) as usize;

/// The bucket of value `value` (ns).
pub fn bucket(value: u64) -> usize {
    if value < SUB_BUCKETS {
        return value as usize;
    }
    let exponent = value.ilog2();
    if exponent > MAX_EXP {
        return BUCKETS - 1;
    }
    let shift = exponent - SUB_BITS;
    (SUB_BUCKETS + u64::from(shift) * SUB_BUCKETS + ((value >> shift) & (SUB_BUCKETS - 1))) as usize
}

/// The values (ns) bucket `index` holds: `low..high`. The last bucket also holds everything
/// above its range.
pub fn bucket_range(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return (index, index + 1);
    }
    let shift = (index - SUB_BUCKETS) / SUB_BUCKETS;
    let mantissa = SUB_BUCKETS + (index - SUB_BUCKETS) % SUB_BUCKETS;
    (mantissa << shift, (mantissa + 1) << shift)
}

/// Latency percentiles from a histogram, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Samples.
    pub samples: u64,
    /// Smallest sample (its bucket's low end).
    pub min_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest sample (its bucket's high end).
    pub max_ns: u64,
}

/// The value below which fraction `quantile` (0..=1) of the samples in `counts` (indexed by
/// bucket) lie: the middle of the bucket where the running count reaches it. `None` without
/// samples.
pub fn quantile(counts: &[u64], quantile: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the sample wanted, 1-based: ceil(q * total), at least 1; the epsilon keeps
    // 0.999 * 1000 (998.9999...) or (999.0000...1) at rank 999.
    #[expect(
        clippy::cast_sign_loss,
        reason = "clamped to 0..=total before the cast"
    )]
    let rank = ((quantile.clamp(0.0, 1.0) * total as f64 - 1e-9)
        .ceil()
        .max(1.0) as u64)
        .min(total);
    let mut seen = 0;
    for (index, &count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            let (low, high) = bucket_range(index);
            return Some(low + (high - low) / 2);
        }
    }
    None
}

/// Percentiles of `counts` (indexed by bucket); `None` without samples.
pub fn percentiles(counts: &[u64]) -> Option<Percentiles> {
    let samples = counts.iter().sum();
    let first = counts.iter().position(|&count| count > 0)?;
    let last = counts.iter().rposition(|&count| count > 0)?;
    Some(Percentiles {
        samples,
        min_ns: bucket_range(first).0,
        p50_ns: quantile(counts, 0.50)?,
        p99_ns: quantile(counts, 0.99)?,
        p999_ns: quantile(counts, 0.999)?,
        max_ns: bucket_range(last).1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        assert_eq!(BUCKETS, 720);
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, high) = bucket_range(index);
            assert_eq!(
                low, expected_low,
                "bucket {index} starts where the last ended"
            );
            assert!(high > low);
            assert_eq!(bucket(low), index, "low end of bucket {index}");
            assert_eq!(bucket(high - 1), index, "high end of bucket {index}");
            // At most 1/16 of the values it holds wide.
            assert!((high - low) * SUB_BUCKETS <= high.max(SUB_BUCKETS));
            expected_low = high;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket(1 << 48), BUCKETS - 1);
    }

    #[test]
    fn known_values() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(15), 15);
        assert_eq!(bucket(16), 16);
        assert_eq!(bucket(31), 31);
        assert_eq!(bucket(32), 32);
        assert_eq!(bucket(33), 32);
        assert_eq!(bucket_range(bucket(1000)), (992, 1024));
        assert_eq!(bucket_range(bucket(1_000_000)), (983_040, 1_015_808));
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut counts = vec![0; BUCKETS];
        // 990 samples of 1000 ns, 9 of 100 us, 1 of 10 ms.
        counts[bucket(1000)] += 990;
        counts[bucket(100_000)] += 9;
        counts[bucket(10_000_000)] += 1;
        let p = percentiles(&counts).unwrap();
        assert_eq!(p.samples, 1000);
        assert_eq!(p.p50_ns, 1008);
        assert_eq!(p.p99_ns, 1008);
        let (low, high) = bucket_range(bucket(100_000));
        assert_eq!(p.p999_ns, low + (high - low) / 2);
        assert!(p.max_ns > 10_000_000);
        assert_eq!(p.min_ns, 992);
        assert_eq!(percentiles(&vec![0; BUCKETS]), None);
    }
}
