//! Hours as the rollup tables number them (`µs / 3600000000`): the whole
//! hours inside a window come from the rollups, the rest from the rows.

/// An hour in microseconds.
pub(crate) const HOUR_US: i64 = 3_600_000_000;

/// The first hour that starts at or after `t` (µs).
pub(crate) fn first_whole_hour(t: i64) -> i64 {
    t.div_euclid(HOUR_US) + i64::from(t.rem_euclid(HOUR_US) != 0)
}

/// The last hour that ends at or before `t` (µs, inclusive); an open end
/// (`i64::MAX`) takes in every hour.
pub(crate) fn last_whole_hour(t: i64) -> i64 {
    if t == i64::MAX { i64::MAX / HOUR_US } else { (t + 1).div_euclid(HOUR_US) - 1 }
}

/// The start (µs) of `hour`, saturating.
pub(crate) fn start_of(hour: i64) -> i64 {
    hour.saturating_mul(HOUR_US)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_hours_lie_inside_the_window() {
        assert_eq!(first_whole_hour(0), 0);
        assert_eq!(first_whole_hour(1), 1);
        assert_eq!(first_whole_hour(HOUR_US), 1);
        assert_eq!(first_whole_hour(HOUR_US + 1), 2);
        assert_eq!(last_whole_hour(HOUR_US - 1), 0);
        assert_eq!(last_whole_hour(HOUR_US - 2), -1);
        assert_eq!(last_whole_hour(2 * HOUR_US), 1);
        assert_eq!(last_whole_hour(i64::MAX), i64::MAX / HOUR_US);
        assert_eq!(start_of(i64::MAX / HOUR_US + 1), i64::MAX);
        assert_eq!(start_of(3), 3 * HOUR_US);
    }
}
