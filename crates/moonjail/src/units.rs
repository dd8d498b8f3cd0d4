//! Human sizes (`5MiB`) and durations (`500ms`), as front ends (the CLI; a future HTTP
//! service) accept them.

use std::time::Duration;

use crate::ConfigError;

/// Parses a byte size: a number with an optional unit `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`,
/// `G`/`GB`/`GiB` (case-insensitive). Decimal units (`KB`) are powers of 1000, binary
/// units (`KiB`) and bare letters (`K`) powers of 1024, as `ulimit` users expect.
///
/// # Errors
/// [`ConfigError::Parse`] when the text is not a size or overflows.
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    let err = |reason: &str| ConfigError::Parse {
        what: "size",
        input: text.to_string(),
        reason: reason.to_string(),
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num = num.replace('_', "");
    if num.is_empty() {
        return Err(err("expected a number, e.g. 64MiB"));
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        _ => return Err(err("unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)")),
    };
    let value: f64 = num.parse().map_err(|_| err("not a number"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err("too large"));
    }
    Ok(bytes.round() as u64)
}

/// Parses a duration: a number with a unit `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`; a bare
/// number means seconds.
///
/// # Errors
/// [`ConfigError::Parse`] when the text is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let err = |reason: &str| ConfigError::Parse {
        what: "duration",
        input: text.to_string(),
        reason: reason.to_string(),
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| err("expected a number, e.g. 500ms or 2s"))?;
    let secs = match unit.trim() {
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(err("unknown unit (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| err("out of range"))
}

/// A byte count as people write it, in the units [`parse_size`] reads back: the largest
/// binary unit that divides it exactly (`64 MiB`, `1536 B`... `1.5 KiB` is written as
/// `1536 B`, never rounded).
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes != 0 && bytes % (1 << shift) == 0 {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

/// A duration as people write it, in the units [`parse_duration`] reads back: whole
/// seconds as `5 s`, whole milliseconds as `200 ms`, anything finer in microseconds.
pub fn format_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros != 0 && micros % 1_000_000 == 0 {
        format!("{} s", micros / 1_000_000)
    } else if micros % 1_000 == 0 {
        format!("{} ms", micros / 1_000)
    } else {
        format!("{micros} us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_back() {
        for bytes in [0, 1, 1536, 1 << 20, 64 << 20, 3 << 30, 1_000_000] {
            let text = format_size(bytes).replace(' ', "");
            assert_eq!(parse_size(&text).unwrap(), bytes, "{text}");
        }
        assert_eq!(format_size(64 << 20), "64 MiB");
        for d in [200, 5000, 1500, 1].map(Duration::from_millis) {
            let text = format_duration(d).replace(' ', "");
            assert_eq!(parse_duration(&text).unwrap(), d, "{text}");
        }
        assert_eq!(format_duration(Duration::from_millis(200)), "200 ms");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1500 us");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5MiB").unwrap(), 5 << 20);
        assert_eq!(parse_size("5m").unwrap(), 5 << 20);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("2KB").unwrap(), 2000);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("64_000").unwrap(), 64000);
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("1e99").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10us").unwrap(), Duration::from_micros(10));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
