//! `etcd://` and `etcds://` URLs: the members' endpoints and the credentials.

use super::{SCHEME, TLS_SCHEME};
use crate::{Error, Result};

/// What an `etcd://` URL names: the members' endpoints and the credentials, if any.
pub(super) struct Target {
    pub(super) endpoints: Vec<String>,
    /// User name and password (percent-decoded).
    pub(super) user: Option<(String, String)>,
    /// `etcds://`: TLS to every member.
    pub(super) tls: bool,
}

/// `etcd://[user:password@]h1:p1[,h2:p2…]` → `["http://h1:p1", …]` and the credentials;
/// `etcds://…` → `https://…`. Messages never quote the URL: it may hold a password.
pub(super) fn parse_url(url: &str) -> Result<Target> {
    const EXPECTED: &str = "url: expected etcd://[user:password@]host:port[,host:port…] \
                            or etcds://… (percent-encode @ : / , % in the user name and \
                            password)";
    let (rest, tls) = match (url.strip_prefix(SCHEME), url.strip_prefix(TLS_SCHEME)) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => return Err(Error::invalid(EXPECTED)),
    };
    if tls && !cfg!(feature = "tls") {
        return Err(Error::invalid(
            "url: etcds:// needs the `tls` feature (TLS to etcd)",
        ));
    }
    let http = if tls { "https" } else { "http" };
    let (user, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (name, password) = userinfo
                .split_once(':')
                .ok_or_else(|| Error::invalid(format!("{EXPECTED}: a user needs a password")))?;
            let name = percent_decode(name).ok_or_else(|| Error::invalid(EXPECTED))?;
            let password = percent_decode(password).ok_or_else(|| Error::invalid(EXPECTED))?;
            if name.is_empty() || password.is_empty() {
                return Err(Error::invalid(format!(
                    "{EXPECTED}: an empty user name or password"
                )));
            }
            (Some((name, password)), hosts)
        }
        None => (None, rest),
    };
    let endpoints: Vec<String> = hosts
        .trim_end_matches('/')
        .split(',')
        .map(|h| {
            let (host, port) = h.rsplit_once(':').ok_or_else(|| Error::invalid(EXPECTED))?;
            if !port.parse::<u16>().is_ok_and(|p| p != 0) {
                return Err(Error::invalid(EXPECTED));
            }
            if !valid_host(host) {
                return Err(Error::invalid(format!(
                    "{EXPECTED}: a member's host must be a host name, an IPv4 address or an \
                     IPv6 address in brackets ([::1]:2379)"
                )));
            }
            Ok(format!("{http}://{h}"))
        })
        .collect::<Result<_>>()?;
    Ok(Target {
        endpoints,
        user,
        tls,
    })
}

/// A host etcd's client can dial: a name or IPv4 address (letters, digits, `-`, `.`,
/// `_`), or an IPv6 address in brackets. Checked here so that a malformed one (`a:b`,
/// `[::1`) is bad input, not a failure to connect.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// `%XX` escapes decoded; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_members_and_credentials() {
        let t = parse_url("etcd://a:1,127.0.0.1:2379").unwrap();
        assert_eq!(t.endpoints, ["http://a:1", "http://127.0.0.1:2379"]);
        let t = parse_url("etcd://[::1]:2379,etcd-0.etcd_svc.local:2379").unwrap();
        assert_eq!(
            t.endpoints,
            ["http://[::1]:2379", "http://etcd-0.etcd_svc.local:2379"]
        );
        assert_eq!(t.user, None);
        let t = parse_url("etcd://app:p%40ss%3Aw%2Cd@a:1,b:2/").unwrap();
        assert_eq!(t.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(t.user, Some(("app".to_owned(), "p@ss:w,d".to_owned())));
        // A raw @ in the password still splits at the last one.
        let t = parse_url("etcd://app:p@ss@a:1").unwrap();
        assert_eq!(t.user, Some(("app".to_owned(), "p@ss".to_owned())));
        match parse_url("etcds://app:secret@a:1,b:2") {
            Ok(t) => {
                assert!(cfg!(feature = "tls") && t.tls);
                assert_eq!(t.endpoints, ["https://a:1", "https://b:2"]);
            }
            Err(e) => {
                assert!(!cfg!(feature = "tls") && e.is_invalid_argument());
                assert!(!e.to_string().contains("secret"), "{e}");
            }
        }
        for bad in [
            "etcd://",
            "etcd://a",
            "etcd://a:0",
            "etcd://a:x",
            "etcd://a:1,",
            "etcd://u@a:1",
            "etcd://:secret@a:1",
            "etcd://u:@a:1",
            "etcd://u:secret%zz@a:1",
            "etcd://u:secret%+f@a:1",
            "etcd://u:secret@",
            "etcs://a:1",
            // Malformed hosts: bad input, not a store error when dialled.
            "etcd://a:b:2379",
            "etcd://[::1:2379",
            "etcd://::1:2379",
            "etcd://[::1]x:2379",
            "etcd://[not-ip]:2379",
            "etcd://a b:2379",
            "etcd://a/b:2379",
            "etcd://a%20b:2379",
        ] {
            let err = parse_url(bad).err().expect(bad);
            assert!(err.is_invalid_argument(), "{bad}");
            assert!(!err.to_string().contains("secret"), "{bad}: {err}");
        }
    }
}
