//! `leasehold`: list, show, watch and release the locks of the `leasehold` library.
//!
//! ```text
//! leasehold [--url URL | --config FILE] [--key-prefix PREFIX] [--timeout D] [--json] COMMAND
//!   ls [PREFIX]                     the locks held, as a table
//!   show KEY                        one lock (exit code 1 if none)
//!   release KEY [--yes]             delete it, after confirmation (1: none, 3: not confirmed)
//!   watch [PREFIX] [--interval D] [--count N]   a live view
//!   migrate [URL] [--print]         PostgreSQL: create the lock tables, or print their SQL
//! ```
//!
//! Errors go to stderr with exit code 2; no message ever shows a password (the library
//! never puts one in an error, and every message is scrubbed of those found in
//! `--url`, `LEASEHOLD_URL` and the configuration file).

mod args;
mod commands;
mod escape;
mod migrate;
mod open;
mod render;
mod suggest;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;

use args::{Cli, Command};
use open::Secrets;

/// Exit code: an error (usage, configuration, store).
pub const ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut printer = Printer {
        json: cli.json,
        secrets: Secrets::default(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            printer.error(&format!("cannot start the runtime: {e}"));
            return ExitCode::from(ERROR);
        }
    };
    let code = match runtime.block_on(run(cli, &mut printer)) {
        Ok(code) => code,
        Err(failure) => {
            if let Some(message) = &failure.message {
                printer.error(message);
            }
            failure.code
        }
    };
    ExitCode::from(code)
}

async fn run(mut cli: Cli, printer: &mut Printer) -> Result<u8, Failure> {
    if let Command::Migrate { target, print } = &cli.command {
        if let Some(url) = target {
            cli.store.url = Some(url.clone());
        }
        let config = open::config(&cli.store, &mut printer.secrets)?;
        return migrate::migrate(&config, *print, printer).await;
    }
    let (client, prefixed) = open::open(&cli.store, &mut printer.secrets).await?;
    let p = &*printer;
    let bare = !prefixed;
    match &cli.command {
        Command::Ls { prefix } => commands::ls(&client, prefix, p).await,
        Command::Show { key } => commands::show(&client, key, bare, p).await,
        Command::Release { key, yes } => commands::release(&client, key, *yes, bare, p).await,
        Command::Watch {
            prefix,
            interval,
            count,
        } => commands::watch(&client, prefix, *interval, *count, p).await,
        Command::Migrate { .. } => unreachable!("run before the store is opened"),
    }
}

/// Why the command stopped early: a message for stderr (none for a closed stdout) and
/// the exit code.
#[derive(Debug)]
pub struct Failure {
    message: Option<String>,
    code: u8,
}

impl Failure {
    /// An error: printed to stderr, exit code 2.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: Some(message.into()),
            code: ERROR,
        }
    }
}

/// Where output goes: stdout for results, stderr for notes and errors — every message
/// scrubbed of the secrets the command was given.
pub struct Printer {
    pub json: bool,
    secrets: Secrets,
}

impl Printer {
    /// Results, on stdout. A reader that went away (`leasehold ls | head`) ends the
    /// command quietly.
    pub fn out(&self, text: &str) -> Result<(), Failure> {
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure {
                message: None,
                code: 0,
            }),
            Err(e) => Err(Failure::new(format!("cannot write the output: {e}"))),
        }
    }

    /// A JSON document, pretty, on stdout.
    pub fn json(&self, value: &impl Serialize) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| Failure::new(format!("cannot write JSON: {e}")))?;
        self.out(&(text + "\n"))
    }

    /// A JSON document on one line, on stdout (`watch --json`).
    pub fn json_line(&self, value: &impl Serialize) -> Result<(), Failure> {
        let text = serde_json::to_string(value)
            .map_err(|e| Failure::new(format!("cannot write JSON: {e}")))?;
        self.out(&(text + "\n"))
    }

    /// A remark for the person at the terminal, on stderr (`no lock on "k"`). Keys in
    /// it are escaped where it names them; whatever else reaches a terminal escape
    /// sequence is escaped here ([`escape::message`]).
    pub fn note(&self, text: &str) {
        eprintln!("{}", escape::message(&self.secrets.scrub(text)));
    }

    /// An error, on stderr (escaped as a note).
    pub fn error(&self, text: &str) {
        eprintln!("leasehold: {}", escape::message(&self.secrets.scrub(text)));
    }
}
