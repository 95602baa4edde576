//! `postgres://` and `postgresql://` URLs: the connection (libpq's URL form, read by
//! tokio-postgres) and leasehold's own parameters, `schema`, `table` and `create`, taken
//! out of the query string before the rest goes to the driver.

use std::time::Duration;

use crate::{Error, Result};

/// The URL schemes of this store.
pub(crate) const SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

/// The longest table name: room for the `_version` suffix (as long as the longest of
/// `schema.sql`'s, e.g. `_acquire`) within PostgreSQL's 63 bytes.
pub(crate) const MAX_TABLE: usize = 63 - "_version".len();

/// Where the locks live and whether the client may create the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) create: bool,
}

impl Default for Place {
    fn default() -> Self {
        Place {
            schema: "public".into(),
            table: "leasehold_locks".into(),
            create: true,
        }
    }
}

/// What a URL names.
pub(crate) struct Target {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) place: Place,
    /// TLS asked for (`sslmode=require`, `verify-ca`, `verify-full`).
    pub(crate) tls: bool,
    /// Statements prepared once per connection (`prepare=true`).
    pub(crate) prepare: bool,
    /// `host:port[/db]` for diagnostics: never the user's password.
    pub(crate) display: String,
}

/// Parse `url`. Messages never quote the URL (it may hold a password).
pub(crate) fn parse(url: &str, connect_timeout: Duration) -> Result<Target> {
    const EXPECTED: &str = "url: expected postgres://[user[:password]@]host[:port][/database]\
                            [?schema=NAME&table=NAME&create=true|false&prepare=true|false&…]";
    if !SCHEMES.iter().any(|s| url.starts_with(s)) {
        return Err(invalid(EXPECTED));
    }
    let mut place = Place::default();
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut rest = Vec::new();
    let mut tls = false;
    let mut prepare = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "schema" => place.schema = value.to_owned(),
            "table" => place.table = value.to_owned(),
            "create" => place.create = flag("create", value)?,
            "prepare" => prepare = flag("prepare", value)?,
            // The driver knows only disable, prefer and require, and would make `prefer`
            // try TLS unverified: leasehold decides (see `tls.rs`).
            "sslmode" => {
                tls = match value {
                    "disable" | "allow" | "prefer" => false,
                    "require" | "verify-ca" | "verify-full" => true,
                    _ => {
                        return Err(invalid(
                            "url: sslmode must be disable, allow, prefer, require, verify-ca \
                             or verify-full",
                        ));
                    }
                }
            }
            _ => rest.push(pair),
        }
    }
    check_identifier("schema", &place.schema, 63)?;
    check_identifier("table", &place.table, MAX_TABLE)?;
    let driver_url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config: tokio_postgres::Config = driver_url
        .parse()
        .map_err(|_| invalid(format!("{EXPECTED} (the driver could not read it)")))?;
    if config.get_hosts().is_empty() {
        return Err(invalid(format!("{EXPECTED}: no host")));
    }
    config.connect_timeout(connect_timeout);
    config.ssl_mode(if tls {
        tokio_postgres::config::SslMode::Require
    } else {
        tokio_postgres::config::SslMode::Disable
    });
    if config.get_application_name().is_none() {
        config.application_name("leasehold");
    }
    let display = display(&config);
    Ok(Target {
        config,
        place,
        tls,
        prepare,
        display,
    })
}

/// `true` or `false` (or `1`/`0`, `yes`/`no`).
fn flag(name: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid(format!("url: {name} must be true or false"))),
    }
}

/// `host:port/database` of the first host.
fn display(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_dbname() {
        Some(db) => format!("{host}:{port}/{db}"),
        None => format!("{host}:{port}"),
    }
}

/// A name leasehold puts in its SQL (always double-quoted): ASCII letters, digits and
/// `_`, not starting with a digit, at most `max` bytes.
pub(crate) fn check_identifier(what: &str, name: &str, max: usize) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= max
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what}: must be 1 to {max} ASCII letters, digits or `_`, not starting with a \
             digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn leasehold_parameters_are_taken_out_and_the_rest_goes_to_the_driver() {
        let t = parse(
            "postgres://u:secret@db.example:6432/app?schema=locks&table=t1&create=false&sslmode=disable",
            T,
        )
        .unwrap();
        assert_eq!(
            t.place,
            Place {
                schema: "locks".into(),
                table: "t1".into(),
                create: false
            }
        );
        assert_eq!(t.display, "db.example:6432/app");
        assert_eq!(t.config.get_password(), Some(&b"secret"[..]));
        let t = parse("postgresql://localhost", T).unwrap();
        assert_eq!(t.place, Place::default());
        assert!(!t.tls && !t.prepare);
        assert!(parse("postgres://h?prepare=true", T).unwrap().prepare);
        assert!(parse("postgres://h?prepare=sometimes", T).is_err());
    }

    #[test]
    fn sslmode_is_leaseholds_to_read() {
        use tokio_postgres::config::SslMode;
        for (mode, tls) in [
            ("disable", false),
            ("allow", false),
            ("prefer", false),
            ("require", true),
            ("verify-ca", true),
            ("verify-full", true),
        ] {
            let t = parse(&format!("postgres://h/db?sslmode={mode}&table=t"), T).unwrap();
            assert_eq!(t.tls, tls, "{mode}");
            let expected = if tls {
                SslMode::Require
            } else {
                SslMode::Disable
            };
            assert_eq!(t.config.get_ssl_mode(), expected, "{mode}");
        }
        let err = parse("postgres://u:secret@h/db?sslmode=sometimes", T)
            .err()
            .unwrap();
        assert!(err.is_invalid_argument() && !err.to_string().contains("secret"));
    }

    #[test]
    fn names_that_are_not_plain_identifiers_are_refused_without_quoting_the_url() {
        for bad in [
            "schema=a-b",
            "schema=",
            "table=1abc",
            "table=a%22b",
            "table=a\"b",
            "schema=a.b",
            "create=maybe",
        ] {
            let url = format!("postgres://u:secret@localhost/db?{bad}");
            let err = parse(&url, T).err().expect(bad);
            assert!(err.is_invalid_argument(), "{bad}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        let long = "t".repeat(MAX_TABLE + 1);
        assert!(parse(&format!("postgres://localhost?table={long}"), T).is_err());
        assert!(parse("postgres://localhost?table=_ok_1", T).is_ok());
        assert!(parse("redis://localhost", T).is_err());
    }
}
