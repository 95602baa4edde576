//! When `show` or `release` finds no lock on a key and no key prefix was given: the
//! locks whose keys end in it. Applications usually name keys under a prefix
//! (`ClientBuilder::key_prefix("billing:")`), and an operator who types the bare key
//! (`leader`) most likely meant one of those (`billing:leader`).

use std::fmt::Write as _;
use std::time::Duration;

use leasehold::Client;

use crate::render;

/// How long the search may take: it walks the whole keyspace (`SCAN`), which on a
/// large store is slow; past this, no suggestion is made.
pub const BUDGET: Duration = Duration::from_secs(2);

/// How many keys a hint names.
pub const SHOWN: usize = 5;

/// The keys of locks held that end in `key` and are longer than it, sorted; empty when
/// the store failed or the walk took longer than [`BUDGET`] (a hint is not worth an
/// error).
pub async fn keys_ending_in(client: &Client, key: &str) -> Vec<String> {
    match tokio::time::timeout(BUDGET, client.list("")).await {
        Ok(Ok(locks)) => locks
            .iter()
            .map(|l| l.key())
            .filter(|k| k.len() > key.len() && k.ends_with(key))
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// The lines that follow `no lock on "KEY"` when `found` is not empty: each key, with
/// the `--key-prefix` that names it as `key`.
pub fn hint(key: &str, found: &[String]) -> String {
    if found.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "; held under a key prefix? {} end{} in {} (pass --key-prefix):",
        if found.len() == 1 {
            "this key"
        } else {
            "these keys"
        },
        if found.len() == 1 { "s" } else { "" },
        render::quoted(key)
    );
    let width = found
        .iter()
        .take(SHOWN)
        .map(|k| render::quoted(k).chars().count())
        .max()
        .unwrap_or(0);
    for full in found.iter().take(SHOWN) {
        let prefix = &full[..full.len() - key.len()];
        let _ = write!(
            out,
            "\n  {:<width$}  --key-prefix {}",
            render::quoted(full),
            render::quoted(prefix)
        );
    }
    if found.len() > SHOWN {
        let _ = write!(out, "\n  … and {} more", found.len() - SHOWN);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_names_each_key_and_its_prefix() {
        assert_eq!(hint("leader", &[]), "");
        assert_eq!(
            hint("leader", &["billing:leader".into()]),
            "; held under a key prefix? this key ends in \"leader\" (pass --key-prefix):\n  \
             \"billing:leader\"  --key-prefix \"billing:\""
        );
        let many: Vec<String> = (0..7).map(|i| format!("app{i}:leader")).collect();
        let shown = hint("leader", &many);
        assert!(shown.contains("these keys end in"), "{shown}");
        assert_eq!(shown.lines().count(), 1 + SHOWN + 1, "{shown}");
        assert!(shown.ends_with("\n  … and 2 more"), "{shown}");
    }

    #[test]
    fn hints_escape_what_they_quote() {
        let shown = hint("leader", &["\x1b[2J:leader".into()]);
        assert!(!shown.contains('\x1b'), "{shown}");
        assert!(shown.contains("--key-prefix \"\\x1b[2J:\""), "{shown}");
    }
}
