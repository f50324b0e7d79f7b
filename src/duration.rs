//! Go-style durations ("300ms", "5s", "1h30m"), as Kubernetes users write them.

use std::time::Duration;

/// Parses a Go-style duration ("300ms", "5s", "10m", "1h30m", "0"). `None` when invalid.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&at| at > 0)?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(Duration::try_from_secs_f64(number * seconds).ok()?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_durations() {
        let s = Duration::from_secs;
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5s"), Some(s(5)));
        assert_eq!(parse_duration("10m"), Some(s(600)));
        assert_eq!(parse_duration("1h30m"), Some(s(5400)));
        assert_eq!(parse_duration("1.5h"), Some(s(5400)));
        assert_eq!(parse_duration("300ms"), Some(Duration::from_millis(300)));
        for bad in ["", "5", "m", "5x", "-5s", "5s5", "1e3s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_sum_too_large_for_a_duration_is_invalid() {
        assert_eq!(parse_duration("4000000000000000h4000000000000000h"), None);
    }

    /// Nanoseconds in one of each unit.
    const UNITS: [(&str, u128); 7] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn parsing_never_panics(text in prop_oneof![".*", "[0-9.a-zµ]{0,40}"]) {
            if parse_duration(&text).is_some() {
                prop_assert!(text.chars().all(|c| c.is_ascii_digit() || ".nsuµmh".contains(c)));
            }
        }

        #[test]
        fn sums_of_units_add_up_within_float_rounding_or_overflow_to_none(
            parts in prop::collection::vec((0u64..10_000_000_000_000_000, 0..UNITS.len()), 1..5),
        ) {
            let text: String = parts.iter().map(|(n, unit)| format!("{n}{}", UNITS[*unit].0)).collect();
            let expected: u128 = parts.iter().map(|(n, unit)| u128::from(*n) * UNITS[*unit].1).sum();
            let parsed = parse_duration(&text);
            match u64::try_from(expected / 1_000_000_000) {
                // Floats round: a few nanoseconds, or a part in 10^15 of a long duration.
                Ok(_) => {
                    let parsed = parsed.map(|d| d.as_nanos());
                    prop_assert!(parsed.is_some(), "{}", text);
                    let error = parsed.unwrap().abs_diff(expected);
                    prop_assert!(error <= expected / 1_000_000_000_000_000 + 4, "{} is off by {}ns", text, error);
                }
                Err(_) => prop_assert_eq!(parsed, None),
            }
        }
    }
}
