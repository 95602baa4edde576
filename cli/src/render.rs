//! What the commands print: tables for people, JSON for scripts. Every text an
//! application chose (keys) is escaped for the terminal ([`crate::escape`]) in what
//! people read; JSON carries it as it is (serde_json escapes it).

use std::fmt::Write as _;
use std::time::Duration;

use leasehold::LockInfo;
use serde::Serialize;

use crate::escape;

/// How many characters of a holder's digest a table shows (enough to tell holders apart).
pub const HOLDER_SHOWN: usize = 12;

/// A lock as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct LockJson<'a> {
    pub key: &'a str,
    /// Milliseconds left; `null` for a key without expiry.
    pub ttl_ms: Option<u64>,
    pub fencing_token: u64,
    /// The holder's digest (never its value).
    pub holder: &'a str,
    /// The label its client stored (by default host name and pid); `null`: none.
    pub holder_label: Option<&'a str>,
    /// When the lock was acquired, ms since the Unix epoch; `null`: not recorded.
    pub locked_at_ms: Option<u64>,
}

impl<'a> From<&'a LockInfo> for LockJson<'a> {
    fn from(info: &'a LockInfo) -> Self {
        LockJson {
            key: info.key(),
            ttl_ms: info
                .ttl()
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            fencing_token: info.fencing_token(),
            holder: info.holder(),
            holder_label: info.holder_label(),
            locked_at_ms: info.locked_at().and_then(|at| {
                at.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }),
        }
    }
}

/// The holder's label, escaped; `-` without one.
fn label(info: &LockInfo) -> String {
    info.holder_label()
        .map_or_else(|| "-".to_owned(), |l| escape::text(l).into_owned())
}

/// `12:03:04 UTC (42s ago)`; `-` when not recorded.
fn since(info: &LockInfo) -> String {
    let Some(at) = info.locked_at() else {
        return "-".to_owned();
    };
    match std::time::SystemTime::now().duration_since(at) {
        Ok(ago) => format!("{} ({} ago)", clock(at), ttl(Some(ago))),
        Err(_) => clock(at),
    }
}

pub fn locks_json(locks: &[LockInfo]) -> Vec<LockJson<'_>> {
    locks.iter().map(LockJson::from).collect()
}

/// `850ms`, `29.8s`, `4m 05s`, `2h 03m`, `3d 04h`; `no expiry` without one.
pub fn ttl(ttl: Option<Duration>) -> String {
    let Some(ttl) = ttl else {
        return "no expiry".to_owned();
    };
    let ms = ttl.as_millis();
    let s = ttl.as_secs();
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The start of a holder's digest, for a table.
pub fn short_holder(holder: &str) -> &str {
    match holder.char_indices().nth(HOLDER_SHOWN) {
        Some((at, _)) => &holder[..at],
        None => holder,
    }
}

/// `KEY  TTL  TOKEN  HOLDER  LABEL`, one row per lock, columns aligned; keys and labels
/// in full, escaped.
pub fn table(locks: &[LockInfo]) -> String {
    let rows: Vec<[String; 5]> = locks
        .iter()
        .map(|l| {
            [
                escape::text(l.key()).into_owned(),
                ttl(l.ttl()),
                l.fencing_token().to_string(),
                escape::text(short_holder(l.holder())).into_owned(),
                label(l),
            ]
        })
        .collect();
    let header = ["KEY", "TTL", "TOKEN", "HOLDER", "LABEL"].map(str::to_owned);
    let mut widths = [0; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:<w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// One lock in detail (its key escaped).
pub fn detail(info: &LockInfo) -> String {
    let ttl_line = match info.ttl() {
        Some(t) => format!("{} ({} ms)", ttl(Some(t)), t.as_millis()),
        None => ttl(None),
    };
    format!(
        "key            {}\nttl            {}\nfencing token  {}\nholder         {}\n\
         label          {}\nlocked at      {}\n",
        escape::text(info.key()),
        ttl_line,
        info.fencing_token(),
        escape::text(info.holder()),
        label(info),
        since(info),
    )
}

/// `token 7, holder 3f2a9c0d51e4 (web-3:4120), 29.8s left`.
pub fn summary(info: &LockInfo) -> String {
    let left = match info.ttl() {
        Some(t) => format!("{} left", ttl(Some(t))),
        None => "no expiry".to_owned(),
    };
    let labelled = match info.holder_label() {
        Some(l) => format!(" ({})", escape::text(l)),
        None => String::new(),
    };
    format!(
        "fencing token {}, holder {}{labelled}, {left}",
        info.fencing_token(),
        escape::text(short_holder(info.holder()))
    )
}

/// `keys starting with "jobs:"`, or `any key` for the empty prefix.
pub fn under(prefix: &str) -> String {
    if prefix.is_empty() {
        "any key".to_owned()
    } else {
        format!("keys starting with {}", quoted(prefix))
    }
}

/// `"key"`, escaped: how messages name a key.
pub fn quoted(key: &str) -> String {
    format!("\"{}\"", escape::text(key))
}

/// `12:03:04 UTC` for a wall-clock instant.
pub fn clock(at: std::time::SystemTime) -> String {
    let s = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02} UTC",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_at_a_glance() {
        let ms = Duration::from_millis;
        assert_eq!(ttl(Some(ms(850))), "850ms");
        assert_eq!(ttl(Some(ms(29_874))), "29.8s");
        assert_eq!(ttl(Some(ms(1_000))), "1.0s");
        assert_eq!(ttl(Some(ms(245_000))), "4m 05s");
        assert_eq!(ttl(Some(ms(7_380_000))), "2h 03m");
        assert_eq!(ttl(Some(ms(273_600_000))), "3d 04h");
        assert_eq!(ttl(None), "no expiry");
    }

    #[test]
    fn holders_are_shortened() {
        assert_eq!(short_holder("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_holder("abc"), "abc");
    }

    #[test]
    fn clock_is_utc() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3600 * 12 + 63);
        assert_eq!(clock(at), "12:01:03 UTC");
    }
}
