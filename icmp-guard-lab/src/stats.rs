//! Reading `icmp-guard stats --json`, as the tests, the demo and the benchmark do.

use serde_json::Value;

/// The row of (family, type), if a packet of that type was seen.
pub fn icmp_row<'a>(stats: &'a Value, family: &str, icmp_type: u64) -> Option<&'a Value> {
    stats["icmp"]
        .as_array()?
        .iter()
        .find(|row| row["family"] == family && row["type"] == icmp_type)
}

/// A counter of the row of (family, type), 0 when the row is absent (no packet of that
/// type seen yet). `path` is e.g. `["passed"]` or `["dropped", "policy"]`.
pub fn counter(stats: &Value, family: &str, icmp_type: u64, path: &[&str]) -> u64 {
    icmp_row(stats, family, icmp_type).map_or(0, |row| {
        path.iter()
            .fold(row, |value, key| &value[*key])
            .as_u64()
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{counter, icmp_row};

    #[test]
    fn rows_and_counters_of_stats_json() {
        let stats = json!({"icmp": [
            {"family": "v4", "type": 8, "passed": 5, "dropped": {"policy": 3}},
            {"family": "v6", "type": 8, "passed": 1},
        ]});
        assert_eq!(icmp_row(&stats, "v6", 8).expect("row")["passed"], 1);
        assert_eq!(counter(&stats, "v4", 8, &["dropped", "policy"]), 3);
        assert_eq!(counter(&stats, "v4", 8, &["passed"]), 5);
        assert_eq!(counter(&stats, "v4", 0, &["passed"]), 0);
    }
}
