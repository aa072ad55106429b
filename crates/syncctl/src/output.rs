//! Writing to stdout: plain tables, JSON, and time formats.

use std::io::Write as _;
use std::time::{Duration, UNIX_EPOCH};

/// Writes `text` to stdout. A closed pipe (`syncctl runs | head`) is not an error.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}

/// Writes `value` as pretty JSON and a newline.
pub fn print_json(value: &serde_json::Value) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    print(&text)
}

/// Milliseconds since the epoch as RFC 3339 UTC, to the second (`2026-11-22T09:34:17Z`).
pub fn rfc3339(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A duration in milliseconds for people (`1s 234ms`).
pub fn duration(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    if ms == 0 {
        return "0s".to_owned();
    }
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// A plain text table: a header row and left-aligned columns, two spaces apart. The last
/// column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        let n = row.len();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == n {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count()) + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_340_057_123), "2026-11-22T09:34:17Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
        assert_eq!(duration(1234), "1s 234ms");
        assert_eq!(duration(0), "0s");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "NAME", "NOTE"],
            &[
                vec!["1".into(), "a".into(), "x y".into()],
                vec!["10".into(), "long-name".into(), String::new()],
            ],
        );
        assert_eq!(t, "ID  NAME       NOTE\n1   a          x y\n10  long-name\n");
    }
}
