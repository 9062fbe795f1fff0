//! Driver errors to [`webhook_core::Error`], with the URL's password kept out.

use deadpool_redis::{
    PoolError,
    redis::{ErrorKind, RedisError},
};
use webhook_core::Error;

/// Hides the password of the connection URL in error messages.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

/// Never shows the secrets it hides.
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for the password of `url`, if it has one.
    pub(crate) fn for_url(url: &str) -> Self {
        let mut secrets = Vec::new();
        if let Some(password) = password_of(url) {
            let decoded = percent_decode(&password);
            if decoded != password {
                secrets.push(decoded);
            }
            secrets.push(password);
        }
        secrets.retain(|s| !s.is_empty());
        Self { secrets }
    }

    /// `message` with every secret replaced by `***`.
    pub(crate) fn clean(&self, message: String) -> String {
        self.secrets
            .iter()
            .fold(message, |m, secret| m.replace(secret.as_str(), "***"))
    }

    /// Maps a driver error: malformed replies are `Corrupt`, an out-of-memory
    /// server is `Limit`, everything else (I/O, timeouts, server errors) `Unavailable`.
    pub(crate) fn redis(&self, e: &RedisError) -> Error {
        let message = self.clean(format!("redis: {e}"));
        match e.kind() {
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Error::Corrupt(message),
            _ if e.code() == Some("OOM") => Error::Limit(message),
            _ => Error::Unavailable(message),
        }
    }

    /// Maps a failure to get a pooled connection.
    pub(crate) fn pool(&self, e: PoolError) -> Error {
        match e {
            PoolError::Backend(e) => self.redis(&e),
            other => Error::Unavailable(self.clean(format!("redis connection pool: {other}"))),
        }
    }
}

/// The password in `scheme://user:password@host...`, as written.
fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password.to_owned())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_the_password() {
        let redactor = Redactor::for_url("redis://default:pw-secret-1@127.0.0.1:6379/0");
        let shown = format!("{redactor:?}");
        assert!(!shown.contains("pw-secret-1"), "{shown}");
    }

    #[test]
    fn passwords_are_found_and_redacted() {
        assert_eq!(
            password_of("redis://user:s3cr%40t@host:6379/0").as_deref(),
            Some("s3cr%40t")
        );
        assert_eq!(password_of("redis://:pw@host/").as_deref(), Some("pw"));
        assert_eq!(password_of("redis://host:6379/"), None);
        assert_eq!(password_of("redis://user@host/"), None);
        let r = Redactor::for_url("redis://user:s3cr%40t@host:6379/0");
        assert_eq!(
            r.clean("bad s3cr@t and s3cr%40t".to_owned()),
            "bad *** and ***"
        );
        assert_eq!(Redactor::for_url("redis://h/").clean("x".into()), "x");
    }
}
