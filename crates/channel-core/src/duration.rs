//! ISO-8601 durations as Knative writes them in `DeliverySpec`
//! (`PT5S`, `PT0.5S`, `PT1M30S`, `P1DT2H`, `P1W`).
//!
//! Years and months have no fixed length and are refused. A Go-style value
//! such as `5s` is refused with the ISO-8601 spelling suggested, since that
//! is the mistake users make.

use std::time::Duration;

/// A value that is not an ISO-8601 duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not an ISO-8601 duration{hint}")]
pub struct DurationError {
    pub value: String,
    hint: String,
}

fn err(value: &str, hint: impl Into<String>) -> DurationError {
    DurationError {
        value: value.to_owned(),
        hint: hint.into(),
    }
}

/// Suggest the ISO-8601 spelling of a Go-style duration (`5s` → `PT5S`).
fn suggestion(value: &str) -> Option<String> {
    let v = value.trim();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = v.split_at(split);
    if num.is_empty() || num.parse::<f64>().is_err() {
        return None;
    }
    match unit {
        "ms" => {
            let ms: f64 = num.parse().ok()?;
            Some(format!("PT{}S", trim_float(ms / 1000.0)))
        }
        "s" | "sec" | "secs" => Some(format!("PT{num}S")),
        "m" | "min" => Some(format!("PT{num}M")),
        "h" => Some(format!("PT{num}H")),
        "d" => Some(format!("P{num}D")),
        _ => None,
    }
}

fn trim_float(f: f64) -> String {
    let s = format!("{f:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Parse an ISO-8601 duration.
pub fn parse_iso8601(value: &str) -> Result<Duration, DurationError> {
    let hint = || match suggestion(value) {
        Some(s) => format!(", try {s:?}"),
        None => ", expected for example \"PT5S\", \"PT0.5S\" or \"PT1M30S\"".to_owned(),
    };
    let v = value.trim();
    let Some(rest) = v.strip_prefix('P') else {
        return Err(err(value, hint()));
    };
    if rest.is_empty() {
        return Err(err(value, hint()));
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => {
            if t.is_empty() {
                return Err(err(value, hint()));
            }
            (d, Some(t))
        }
        None => (rest, None),
    };
    let mut total = 0f64;
    let mut parse_part =
        |part: &str, units: &[(char, f64)], is_time: bool| -> Result<(), DurationError> {
            let mut num = String::new();
            let mut last_unit = None::<usize>;
            for c in part.chars() {
                if c.is_ascii_digit() || c == '.' || c == ',' {
                    num.push(if c == ',' { '.' } else { c });
                    continue;
                }
                let Some(idx) = units.iter().position(|(u, _)| *u == c) else {
                    let what = match (c, is_time) {
                        ('Y', _) | ('M', false) => {
                            ", years and months have no fixed length: use days (\"P30D\") or hours"
                                .to_owned()
                        }
                        _ => hint(),
                    };
                    return Err(err(value, what));
                };
                if num.is_empty() || last_unit.is_some_and(|l| l >= idx) {
                    return Err(err(value, hint()));
                }
                let n: f64 = num.parse().map_err(|_| err(value, hint()))?;
                total += n * units[idx].1;
                num.clear();
                last_unit = Some(idx);
            }
            if !num.is_empty() {
                return Err(err(value, hint()));
            }
            Ok(())
        };
    parse_part(date, &[('W', 604_800.0), ('D', 86_400.0)], false)?;
    if let Some(time) = time {
        parse_part(time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)], true)?;
    }
    if !total.is_finite() || !(0.0..=1e12).contains(&total) {
        return Err(err(value, ", the duration is out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Format a duration as ISO-8601 (`PT1.5S`), for status and messages.
pub fn format_iso8601(d: Duration) -> String {
    let secs = d.as_secs_f64();
    format!("PT{}S", trim_float(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_knative_durations() {
        let ok = [
            ("PT5S", 5_000),
            ("PT0.5S", 500),
            ("PT0,25S", 250),
            ("PT1M30S", 90_000),
            ("PT2H", 7_200_000),
            ("P1DT2H", 93_600_000),
            ("P1W", 604_800_000),
            ("PT0S", 0),
            ("PT0.001S", 1),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_iso8601(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_with_a_useful_hint() {
        let e = parse_iso8601("5s").unwrap_err().to_string();
        assert_eq!(e, r#""5s" is not an ISO-8601 duration, try "PT5S""#);
        assert!(parse_iso8601("100ms")
            .unwrap_err()
            .to_string()
            .contains(r#"try "PT0.1S""#));
        assert!(parse_iso8601("2m")
            .unwrap_err()
            .to_string()
            .contains(r#"try "PT2M""#));
        assert!(parse_iso8601("P1M")
            .unwrap_err()
            .to_string()
            .contains("no fixed length"));
        for bad in [
            "", "P", "PT", "T5S", "PT5", "PTS", "PT5S5M", "P1H", "PT-1S", "xyz",
        ] {
            assert!(parse_iso8601(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_iso8601(Duration::from_millis(1500)), "PT1.5S");
        assert_eq!(format_iso8601(Duration::from_secs(30)), "PT30S");
    }
}
