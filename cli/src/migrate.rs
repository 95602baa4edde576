//! `leasehold migrate [URL] [--print]`: the PostgreSQL store's schema, printed for a DBA
//! or applied through the library's own creation path (the one a client with
//! `create=true` takes at its first open).

use leasehold::Config;

use crate::{Failure, Printer};

/// Whether `url` is one of the PostgreSQL store's (either case of the scheme).
pub fn is_postgres(url: &str) -> bool {
    ["postgres://", "postgresql://"].iter().any(|s| {
        url.get(..s.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(s))
    })
}

/// Print or apply the schema of the store `config` names (another store's URL is refused
/// first, whatever this build has).
pub async fn migrate(config: &Config, print: bool, printer: &Printer) -> Result<u8, Failure> {
    let url = config.url.as_deref().unwrap_or_default();
    if config.cluster.is_some() || config.sentinels.is_some() || !is_postgres(url) {
        // Never the URL itself: it may hold a password.
        return Err(Failure::new(
            "migrate: only the PostgreSQL store has a schema to create (a postgres:// or \
             postgresql:// URL); the other stores need none",
        ));
    }
    crate::open::built_for(config)?;
    run(url, config, print, printer).await
}

#[cfg(feature = "postgres")]
async fn run(url: &str, config: &Config, print: bool, printer: &Printer) -> Result<u8, Failure> {
    use leasehold::store::postgres;
    if print {
        let sql = postgres::schema_sql(url).map_err(|e| Failure::new(format!("migrate: {e}")))?;
        if printer.json {
            printer.json(&serde_json::json!({ "sql": sql }))?;
        } else {
            printer.out(&sql)?;
        }
        return Ok(0);
    }
    let mut options = postgres::Options::default();
    if let Some(timeout) = config.connect_timeout {
        options.connect_timeout = timeout;
    }
    #[cfg(feature = "tls")]
    if let Some(path) = &config.tls_root_certificate {
        let pem = std::fs::read(path).map_err(|e| {
            Failure::new(format!(
                "cannot read tls_root_certificate {}: {e}",
                path.display()
            ))
        })?;
        options.tls_root_certificate = Some(pem);
    }
    let version = postgres::migrate(url, &options)
        .await
        .map_err(|e| Failure::new(format!("migrate: {e}")))?;
    if printer.json {
        printer.json(&serde_json::json!({ "schema_version": version }))?;
    } else {
        printer.out(&format!("schema version {version}\n"))?;
    }
    Ok(0)
}

#[cfg(not(feature = "postgres"))]
async fn run(_: &str, _: &Config, _: bool, _: &Printer) -> Result<u8, Failure> {
    Err(Failure::new(crate::open::without(
        "postgres:// URLs",
        "postgres",
    )))
}
