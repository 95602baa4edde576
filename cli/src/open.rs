//! Opening the store: `--url`, `--config FILE` or `LEASEHOLD_URL`, and keeping what they
//! hold secret out of every message.

use std::path::Path;

use leasehold::{Client, Config};

use crate::Failure;
use crate::args::StoreArgs;

/// The environment variable naming the store when neither `--url` nor the file does.
pub const URL_VAR: &str = "LEASEHOLD_URL";

/// The client the arguments describe, and whether it has a key prefix (`--key-prefix`
/// or the file's); the secrets to keep out of messages are added to `secrets`.
pub async fn open(args: &StoreArgs, secrets: &mut Secrets) -> Result<(Client, bool), Failure> {
    let config = config(args, secrets)?;
    built_for(&config)?;
    let prefixed = config.key_prefix.as_deref().is_some_and(|p| !p.is_empty());
    let client = config
        .open()
        .await
        .map_err(|e| Failure::new(format!("cannot open the store: {e}")))?;
    Ok((client, prefixed))
}

/// The configuration: the file's (if any), its store replaced by `--url`, or given by
/// `LEASEHOLD_URL` when neither names one; `--key-prefix` and `--timeout` on top.
pub fn config(args: &StoreArgs, secrets: &mut Secrets) -> Result<Config, Failure> {
    let mut config = match &args.config {
        Some(path) => load(path, secrets)?,
        None => Config::default(),
    };
    let env_url = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty());
    if let Some(url) = &env_url {
        secrets.add_text(url);
    }
    let has_store = config.url.is_some() || config.cluster.is_some() || config.sentinels.is_some();
    let url = match (&args.url, has_store) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => None,
        (None, false) => Some(env_url.ok_or_else(|| {
            Failure::new(format!(
                "no store: pass --url URL, set {URL_VAR}, or --config FILE"
            ))
        })?),
    };
    if let Some(url) = url {
        secrets.add_text(&url);
        config.url = Some(url);
        config.cluster = None;
        config.sentinels = None;
        config.master_name = None;
    }
    if let Some(prefix) = &args.key_prefix {
        config.key_prefix = Some(prefix.clone());
    }
    if let Some(timeout) = args.timeout {
        config.default_timeout = Some(timeout);
    }
    Ok(config)
}

/// A configuration file: TOML, or YAML (`.yaml`, `.yml`) or JSON (`.json`).
fn load(path: &Path, secrets: &mut Secrets) -> Result<Config, Failure> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(format!("cannot read config file {shown}: {e}")))?;
    // A parse error may quote the line it is about: whatever the file says after a
    // scheme's `user:` never reaches a message.
    secrets.add_text(&text);
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let parsed = match extension.as_deref() {
        Some("yaml" | "yml") => yaml(&text),
        Some("json") => serde_json::from_str(&text).map_err(|e| e.to_string()),
        _ => toml::from_str(&text).map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| Failure::new(format!("config file {shown}: {}", e.trim_end())))
}

#[cfg(feature = "yaml")]
fn yaml(text: &str) -> Result<Config, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

#[cfg(not(feature = "yaml"))]
fn yaml(_: &str) -> Result<Config, String> {
    Err(without("YAML configuration files", "yaml"))
}

/// Refuse, in the command's words, what this build cannot open: a store or setting
/// behind a feature it was built without (the library would name its own feature).
pub fn built_for(config: &Config) -> Result<(), Failure> {
    let url = config.url.as_deref().unwrap_or_default();
    let scheme = |s: &str| {
        url.get(..s.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(s))
    };
    let needs = [
        (
            scheme("rediss://"),
            "rediss:// URLs",
            "tls",
            cfg!(feature = "tls"),
        ),
        (
            scheme("etcd://") || scheme("etcds://"),
            "etcd:// URLs",
            "etcd",
            cfg!(feature = "etcd"),
        ),
        (
            scheme("etcds://"),
            "etcds:// URLs",
            "tls",
            cfg!(feature = "tls"),
        ),
        (
            scheme("postgres://") || scheme("postgresql://"),
            "postgres:// URLs",
            "postgres",
            cfg!(feature = "postgres"),
        ),
        (
            config.tls_root_certificate.is_some(),
            "tls_root_certificate",
            "tls",
            cfg!(feature = "tls"),
        ),
        (
            config.cluster.is_some(),
            "Redis Cluster (`cluster`)",
            "cluster",
            cfg!(feature = "cluster"),
        ),
        (
            config.sentinels.is_some(),
            "Sentinel (`sentinels`)",
            "sentinel",
            cfg!(feature = "sentinel"),
        ),
    ];
    match needs
        .into_iter()
        .find(|(used, _, _, built)| *used && !built)
    {
        Some((_, what, feature, _)) => Err(Failure::new(without(what, feature))),
        None => Ok(()),
    }
}

/// `what` needs `feature`, which this build does not have.
pub fn without(what: &str, feature: &str) -> String {
    format!(
        "{what}: this leasehold was built without its `{feature}` feature \
         (cargo install leasehold-cli --features {feature})"
    )
}

/// Passwords found in the URLs the command was given, masked in every message it
/// prints. The library never puts them in its errors; this also covers what a parser
/// quotes from a configuration file.
#[derive(Debug, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// Every password in `text`: of `scheme://user:PASSWORD@host` (up to the last `@`
    /// before a blank or a quote), and of `pass=` / `password=` query parameters.
    pub fn add_text(&mut self, text: &str) {
        for (at, _) in text.match_indices("://") {
            let rest = &text[at + 3..];
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
                .unwrap_or(rest.len());
            let token = &rest[..end];
            if let Some((userinfo, _)) = token.rsplit_once('@')
                && let Some((_, password)) = userinfo.split_once(':')
            {
                self.add(password);
            }
            if let Some((_, query)) = token.split_once('?') {
                for pair in query.split('&') {
                    if let Some((name, value)) = pair.split_once('=')
                        && (name.eq_ignore_ascii_case("pass")
                            || name.eq_ignore_ascii_case("password"))
                    {
                        self.add(value);
                    }
                }
            }
        }
    }

    fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.0.iter().any(|s| s == secret) {
            self.0.push(secret.to_owned());
            let decoded = percent_decode(secret);
            if decoded != secret && !decoded.is_empty() {
                self.0.push(decoded);
            }
        }
    }

    /// `message` with every known secret replaced by `***`.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_owned();
        // Longest first, so that a secret containing another is masked whole.
        let mut secrets: Vec<&String> = self.0.iter().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for secret in secrets {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_of_urls_in_any_text_are_scrubbed() {
        let mut secrets = Secrets::default();
        secrets.add_text(
            "url = \"redis://app:hun%40ter2@h:6379/0\"\n\
             sentinels: [redis://:s3cret@a:26379, 'redis://:other@b:26379']\n\
             unix = 'unix:///run/r.sock?db=1&pass=sockpw'\n",
        );
        let msg = "line 1: redis://app:hun%40ter2@h (hun@ter2) s3cret other sockpw";
        assert_eq!(
            secrets.scrub(msg),
            "line 1: redis://app:***@h (***) *** *** ***"
        );
        // Nothing else is touched.
        assert_eq!(secrets.scrub("redis://h:6379/0"), "redis://h:6379/0");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b%2F"), "a@b/");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
