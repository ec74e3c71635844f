//! Weight arithmetic shared by the table-driven schedulers (`wrr`, `sh`, `dh`).
//!
//! Both expand weights into a table whose length grows with the sum of the weights, so both
//! first divide the weights by their greatest common divisor (as `ip_vs_wrr.c` does with its
//! `di` step) and, for absurd sums, scale them down to a bounded total.

/// Greatest common divisor (Euclid); `gcd(0, x) == x`.
pub(crate) const fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let rest = a % b;
        a = b;
        b = rest;
    }
    a
}

/// Each server's weight in units of the gcd of the positive weights, 0 for drained servers.
///
/// When the units sum to more than `limit`, every positive weight is scaled by
/// `limit / sum` (rounded down, but at least 1), so the total stays below `limit + servers`.
/// Shares then deviate from the configured ratio by less than one unit per server, a relative
/// error of at most `sum / (limit * weight)`; no real configuration comes near the limits used
/// (2^20 for wrr, 2^17 for sh/dh), since gcd division already shrinks typical weight sets to
/// small integers.
pub(crate) fn units(weights: &[u32], limit: u64) -> Vec<u64> {
    let divisor = weights
        .iter()
        .fold(0, |divisor, &weight| gcd(divisor, u64::from(weight)))
        .max(1);
    let mut units: Vec<u64> = weights
        .iter()
        .map(|&weight| u64::from(weight) / divisor)
        .collect();
    let sum: u64 = units.iter().sum();
    if sum > limit {
        for unit in units.iter_mut().filter(|unit| **unit > 0) {
            // `unit <= sum`, so the quotient is at most `limit` and fits in u64.
            let scaled = u128::from(*unit) * u128::from(limit) / u128::from(sum);
            *unit = (scaled as u64).max(1);
        }
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcd_of_weights() {
        assert_eq!(gcd(0, 0), 0);
        assert_eq!(gcd(0, 6), 6);
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(7, 13), 1);
    }

    #[test]
    fn units_divide_by_gcd() {
        assert_eq!(units(&[300, 100, 0], 1 << 20), vec![3, 1, 0]);
        assert_eq!(units(&[0, 0], 1 << 20), vec![0, 0]);
        assert_eq!(units(&[], 1 << 20), Vec::<u64>::new());
    }

    #[test]
    fn units_are_scaled_to_the_limit() {
        let scaled = units(&[u32::MAX, 1, 2], 1000);
        assert_eq!(scaled, vec![999, 1, 1]);
        let total: u64 = units(&[u32::MAX - 1; 100], 1000).iter().sum();
        assert_eq!(total, 100, "equal weights divide down to 1 each");
    }
}
