//! The holder label a client stores with its locks, for operators
//! ([`ClientBuilder::holder_label`](crate::ClientBuilder::holder_label)).

use std::sync::LazyLock;

use crate::{Error, Result};

/// The longest holder label a client accepts, in bytes.
const MAX_LEN: usize = 256;

/// `label`, checked; the default (this host's name and the process id) for `None`.
pub(crate) fn holder_label(label: Option<&str>) -> Result<Box<str>> {
    match label {
        Some(label) if label.len() > MAX_LEN => Err(Error::invalid(format!(
            "holder_label: at most {MAX_LEN} bytes (got {})",
            label.len()
        ))),
        Some(label) => Ok(label.into()),
        None => Ok(default_label().into()),
    }
}

/// This host's name and the process id (`"web-3:4120"`).
fn default_label() -> &'static str {
    static LABEL: LazyLock<String> = LazyLock::new(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::env::var("COMPUTERNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".to_owned());
        format!("{host}:{}", std::process::id())
    });
    &LABEL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_names_the_host_and_the_process() {
        let label = holder_label(None).unwrap();
        let (host, pid) = label.rsplit_once(':').unwrap();
        assert!(!host.is_empty());
        assert_eq!(pid, std::process::id().to_string());
        assert_eq!(&*holder_label(Some("")).unwrap(), "");
        assert!(holder_label(Some(&"x".repeat(257))).is_err());
        assert!(holder_label(Some(&"x".repeat(256))).is_ok());
    }
}
