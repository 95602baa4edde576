//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Inspect and operate leasehold locks: who holds a lock, for how long, under which
/// fencing token — and take a stuck one away.
#[derive(Debug, Parser)]
#[command(name = "leasehold", version, about, long_about = None)]
#[command(after_help = after_help())]
pub struct Cli {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Print JSON instead of text (one document; `watch`: one line per refresh).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The help's last part: the store, exit codes, escaping, and the features this build
/// has.
fn after_help() -> String {
    let built: Vec<&str> = [
        ("tls", cfg!(feature = "tls")),
        ("cluster", cfg!(feature = "cluster")),
        ("sentinel", cfg!(feature = "sentinel")),
        ("etcd", cfg!(feature = "etcd")),
        ("postgres", cfg!(feature = "postgres")),
        ("yaml", cfg!(feature = "yaml")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    let built = if built.is_empty() {
        "none".to_owned()
    } else {
        built.join(", ")
    };
    format!(
        "\
The store: --url, else the store of --config FILE, else $LEASEHOLD_URL. A --url
replaces the file's store and keeps its other settings.

Exit codes: 0 done; 1 no lock on KEY (show, release); 2 error (usage, config, store);
3 release not confirmed.

Text the applications chose (keys) is printed with control and invisible characters
escaped: \\x1b, \\n, \\u{{202e}}, and a backslash as \\\\. --json prints it JSON-escaped.

Features (cargo install leasehold-cli --features …): redis:// and unix:// (one
server) and TOML or JSON config files always; tls (rediss://), cluster, sentinel,
etcd (etcd://), postgres (postgres://, migrate), yaml (.yaml/.yml config files), full
(all of them).
This build's features: {built}."
    )
}

/// Where the locks are, and how the applications name them.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store: redis://[user:password@]host[:port][/db], unix:///path, rediss://…
    /// (feature `tls`), etcd://host:port[,host:port…] (feature `etcd`),
    /// postgres://[user[:password]@]host[:port][/db][?schema=S&table=T] (feature
    /// `postgres`). [env: LEASEHOLD_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,

    /// A leasehold configuration file (TOML; JSON if it ends in .json; YAML if .yaml or
    /// .yml, feature `yaml`): the store, key prefix, timeouts, TLS root.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The key prefix the applications use (their ClientBuilder::key_prefix): keys are
    /// shown and named without it. Overrides the file's.
    #[arg(long, global = true, value_name = "PREFIX")]
    pub key_prefix: Option<String>,

    /// Bound on each round trip to the store (default 1s, or the file's
    /// default_timeout).
    #[arg(long, global = true, value_name = "DURATION", value_parser = duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the locks held under PREFIX (default: all), sorted by key.
    #[command(visible_alias = "list")]
    Ls {
        /// Only keys starting with this (after the key prefix).
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Show one lock in detail (exit code 1 if none is held).
    Show {
        /// The lock's key (without the key prefix).
        key: String,
    },
    /// Delete a lock whoever holds it, after confirmation (exit code 1 if none is
    /// held, 3 if not confirmed). The holder is not told: its next renewal fails.
    Release {
        /// The lock's key (without the key prefix).
        key: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// A live view of the locks under PREFIX, refreshed every --interval (Ctrl-C
    /// stops).
    Watch {
        /// Only keys starting with this (after the key prefix).
        #[arg(default_value = "")]
        prefix: String,
        /// Time between refreshes.
        #[arg(long, short = 'n', value_name = "DURATION", default_value = "1s", value_parser = duration)]
        interval: Duration,
        /// Stop after this many refreshes (for scripts).
        #[arg(long, short = 'c', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// PostgreSQL: create the lock tables when missing (idempotent) and print the schema
    /// version now there; with --print, print the SQL instead (nothing is sent).
    Migrate {
        /// The store (postgres://…); default: --url, the file's store or $LEASEHOLD_URL.
        #[arg(value_name = "URL")]
        target: Option<String>,
        /// Print the SQL that creates the tables (with the URL's schema and table
        /// names), for a DBA to apply; connect to nothing.
        #[arg(long)]
        print: bool,
    },
}

/// `"250ms"`, `"2s"`, `"1m 30s"` (humantime), at least 1 ms.
fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected a duration such as \"500ms\" or \"2s\")"))?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(duration("0s").is_err());
        assert!(
            duration("fast")
                .unwrap_err()
                .contains("expected a duration")
        );
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::parse_from(["leasehold", "ls", "jobs:", "--json", "--url", "redis://h/"]);
        assert!(cli.json);
        assert_eq!(cli.store.url.as_deref(), Some("redis://h/"));
        assert!(matches!(cli.command, Command::Ls { prefix } if prefix == "jobs:"));
        let cli = Cli::parse_from(["leasehold", "watch", "-n", "200ms", "--count", "2"]);
        assert!(matches!(
            cli.command,
            Command::Watch { interval, count: Some(2), .. } if interval == Duration::from_millis(200)
        ));
    }
}
