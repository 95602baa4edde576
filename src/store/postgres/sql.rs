//! The schema and the statements. Each operation is one statement (autocommit, one round
//! trip) that calls the operation's function in `schema.sql`, where the statement that does
//! the work lives: the call is all the server plans per call, and PL/pgSQL keeps the plan
//! of the statement inside for the session, where no client sees it. No named prepared
//! statements by default, so the calls run unchanged through a transaction-mode pooler.

use super::url::Place;

/// The name every table and function of `schema.sql` starts with (the tables and
/// functions are `public.leasehold_locks<suffix>`).
const DEFAULT_NAME: &str = "public.leasehold_locks";

/// The documented schema, as shipped (`public.leasehold_locks`).
pub(crate) const SCHEMA_SQL: &str = include_str!("schema.sql");

/// The version of the schema this client writes and reads.
pub(crate) const SCHEMA_VERSION: i32 = 2;

/// `schema.sql` for `place`: the same text with its names in place of the defaults.
pub(crate) fn schema_sql(place: &Place) -> String {
    let sql = SCHEMA_SQL.replace(
        "CREATE SCHEMA IF NOT EXISTS public;",
        &format!("CREATE SCHEMA IF NOT EXISTS \"{}\";", place.schema),
    );
    // Each `public.leasehold_locks<suffix>` (`_fences`, `_acquire`, …) becomes
    // `"schema"."table<suffix>"`.
    let mut named = String::with_capacity(sql.len() + sql.len() / 8);
    let mut rest = sql.as_str();
    while let Some(at) = rest.find(DEFAULT_NAME) {
        named.push_str(&rest[..at]);
        let after = &rest[at + DEFAULT_NAME.len()..];
        let suffix = after
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        named.push_str(&table(place, &after[..suffix]));
        rest = &after[suffix..];
    }
    named.push_str(rest);
    named
}

/// `"schema"."table<suffix>"` (names are validated identifiers).
fn table(place: &Place, suffix: &str) -> String {
    format!("\"{}\".\"{}{suffix}\"", place.schema, place.table)
}

/// The statements of one table.
pub(crate) struct Statements {
    pub(crate) acquire: String,
    pub(crate) refresh: String,
    pub(crate) release: String,
    pub(crate) abort: String,
    pub(crate) ttl: String,
    pub(crate) force_release: String,
    pub(crate) inspect: String,
    pub(crate) list: String,
    pub(crate) fenced: String,
    pub(crate) version: String,
}

impl Statements {
    pub(crate) fn new(place: &Place) -> Self {
        // `SELECT * FROM "schema"."table_<operation>"($1, …)`: a call of the operation's
        // function, with the parameters `schema.sql` documents.
        let call = |operation: &str, params: usize| {
            let args: Vec<String> = (1..=params).map(|i| format!("${i}")).collect();
            format!(
                "SELECT * FROM {}({})",
                table(place, &format!("_{operation}")),
                args.join(", ")
            )
        };
        Statements {
            acquire: call("acquire", 7),
            refresh: call("refresh", 3),
            release: call("release", 3),
            abort: call("abort", 7),
            ttl: call("ttl", 2),
            force_release: call("force", 3),
            inspect: call("inspect", 1),
            list: call("list", 3),
            fenced: call("fenced", 5),
            version: format!("SELECT max(version) FROM {}", table(place, "_version")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name `schema.sql` gives (tables and functions) fits PostgreSQL's 63 bytes
    /// with the longest table name the URL accepts, and each is created once.
    #[test]
    fn every_name_fits_with_the_longest_table() {
        let mut suffixes = Vec::new();
        let mut rest = SCHEMA_SQL;
        while let Some(at) = rest.find(DEFAULT_NAME) {
            let after = &rest[at + DEFAULT_NAME.len()..];
            let n = after
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
                .count();
            suffixes.push(&after[..n]);
            rest = &after[n..];
        }
        for suffix in ["_fences", "_version", "_acquire", "_force", "_fenced"] {
            assert!(suffixes.contains(&suffix), "{suffix} in {suffixes:?}");
        }
        for suffix in &suffixes {
            assert!(
                super::super::url::MAX_TABLE + suffix.len() <= 63,
                "{suffix}"
            );
        }
        let functions = SCHEMA_SQL.matches("CREATE OR REPLACE FUNCTION").count();
        assert_eq!(functions, 9);
    }
}
