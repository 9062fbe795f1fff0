//! Mapping driver errors to [`webhook_core::Error`]: no driver types escape, and the
//! password of the connection URL never appears in a message.

use std::sync::Arc;

use webhook_core::Error;

/// Turns driver errors into core errors, hiding the password.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    password: Option<Arc<str>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor")
    }
}

impl Redactor {
    /// A redactor for the password of `config`, if it has one.
    pub(crate) fn new(config: &tokio_postgres::Config) -> Self {
        let password = config
            .get_password()
            .map(String::from_utf8_lossy)
            .filter(|p| !p.is_empty())
            .map(|p| Arc::from(&*p));
        Self { password }
    }

    /// `message` with the password replaced by `***`.
    pub(crate) fn clean(&self, message: &str) -> String {
        match &self.password {
            Some(password) => message.replace(&**password, "***"),
            None => message.to_owned(),
        }
    }

    /// A driver error as a core error.
    ///
    /// Data exceptions (class 22, e.g. a NUL character in text) are the caller's input:
    /// [`Error::Invalid`]. A missing table or column means the schema is not the one this
    /// build expects: [`Error::Corrupt`]. Everything else (connection loss, timeouts,
    /// serialization failures, deadlocks, constraint races) may succeed when retried:
    /// [`Error::Unavailable`].
    pub(crate) fn db(&self, error: &tokio_postgres::Error) -> Error {
        if let Some(db) = error.as_db_error() {
            let code = db.code().code();
            let message = self.clean(&format!("{}: {} ({code})", db.severity(), db.message()));
            return if code.starts_with("22") {
                Error::invalid("value", message)
            } else if matches!(code, "42P01" | "42703" | "3F000") {
                Error::Corrupt(format!("schema not as expected: {message}"))
            } else {
                Error::Unavailable(message)
            };
        }
        Error::Unavailable(self.clean(&error.to_string()))
    }

    /// A pool error as a core error.
    pub(crate) fn pool(&self, error: &deadpool_postgres::PoolError) -> Error {
        match error {
            deadpool_postgres::PoolError::Backend(e) => self.db(e),
            other => Error::Unavailable(self.clean(&format!("no database connection: {other}"))),
        }
    }
}

/// A row that does not decode: the data or the schema is not what this build expects.
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{what}: {detail}"))
}
