//! Store URLs with their secrets masked, for `Debug` and error messages.

use std::fmt;

/// A store URL as `Debug` and errors show it: the password of `user:password@` and the values of
/// `pass=` / `password=` query parameters (the Unix-socket form) replaced by `***`.
///
/// Errs on the side of hiding: whatever precedes the last `@` is treated as user
/// information, even when an unescaped `/` or `?` in a password would make URL parsers
/// disagree.
pub(crate) struct Redacted<'a>(pub(crate) &'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        fmt::Display::fmt(self, f)?;
        f.write_str("\"")
    }
}

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.0;
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, url),
        };
        if let Some(scheme) = scheme {
            write!(f, "{scheme}://")?;
        }
        let rest = match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                match userinfo.split_once(':') {
                    // `user:password@`: keep the user (it helps with ACL errors).
                    Some((user, _)) if !user.contains(['/', '?']) => write!(f, "{user}:***@")?,
                    // A bare `user@` is a user name to Redis, unless it holds what
                    // looks like part of a mangled URL.
                    None if !userinfo.contains(['/', '?', '#']) => write!(f, "{userinfo}@")?,
                    _ => f.write_str("***@")?,
                }
                host
            }
            None => rest,
        };
        let Some((path, query)) = rest.split_once('?') else {
            return f.write_str(rest);
        };
        write!(f, "{path}?")?;
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            match pair.split_once('=') {
                Some((name, _))
                    if name.eq_ignore_ascii_case("pass")
                        || name.eq_ignore_ascii_case("password") =>
                {
                    write!(f, "{name}=***")?;
                }
                _ => f.write_str(pair)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Redacted;

    fn shown(url: &str) -> String {
        Redacted(url).to_string()
    }

    #[test]
    fn passwords_are_masked_and_the_rest_is_kept() {
        assert_eq!(
            shown("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            shown("redis://:hunter2@127.0.0.1:6379/"),
            "redis://:***@127.0.0.1:6379/"
        );
        assert_eq!(
            shown("rediss://app:hunter2@redis.internal:6380/2"),
            "rediss://app:***@redis.internal:6380/2"
        );
        assert_eq!(shown("redis://app@h:1/"), "redis://app@h:1/");
        assert_eq!(
            shown("redis+unix:///run/redis.sock?db=1&pass=hunter2&user=app"),
            "redis+unix:///run/redis.sock?db=1&pass=***&user=app"
        );
        assert_eq!(
            shown("unix:///run/redis.sock?PASSWORD=hunter2"),
            "unix:///run/redis.sock?PASSWORD=***"
        );
        assert_eq!(shown("memory://jobs"), "memory://jobs");
        assert_eq!(
            format!("{:?}", Redacted("redis://:p@h/")),
            "\"redis://:***@h/\""
        );
    }

    #[test]
    fn mangled_urls_hide_everything_before_the_host() {
        // An unescaped `@` or `/` in a password: still nothing of it shown.
        assert_eq!(shown("redis://:hun@ter2@h:1/"), "redis://:***@h:1/");
        assert_eq!(shown("redis://:hun/ter2@h:1/"), "redis://:***@h:1/");
        assert_eq!(shown("redis://u/x:hunter2@h:1/"), "redis://***@h:1/");
        assert_eq!(shown("redis://hun/ter2@h:1/"), "redis://***@h:1/");
        assert_eq!(shown(":hunter2@h"), ":***@h");
        for url in [
            "redis://:hun@ter2@h:1/",
            "redis://:hun/ter2@h:1/",
            "redis://:hun?ter2@h:1/",
            "redis://u:hunter2@h?pass=hunter2",
        ] {
            assert!(
                !shown(url).contains("hunter2") && !shown(url).contains("ter2"),
                "{url}"
            );
        }
    }
}
