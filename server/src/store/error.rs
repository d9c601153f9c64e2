//! What can go wrong in storage, and how a caller of the API sees it.

use super::crypto::CryptoError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("database: {}", pg_message(.0))]
    Postgres(::postgres::Error),
    /// The database cannot be reached now; the call may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("file store: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("storage task failed: {0}")]
    Task(String),
    #[error("encryption: {0}")]
    Crypto(#[from] CryptoError),
}

impl From<::postgres::Error> for StoreError {
    /// A lost connection or a server that cannot serve now (SQLSTATE
    /// classes 08, 53, 57P) is [`StoreError::Unavailable`]; the rest is a
    /// database error.
    fn from(e: ::postgres::Error) -> Self {
        let unavailable = match e.code() {
            Some(code) => {
                let c = code.code();
                c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")
            }
            None => {
                e.is_closed()
                    || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
            }
        };
        if unavailable {
            Self::Unavailable(pg_message(&e))
        } else {
            Self::Postgres(e)
        }
    }
}

/// The server's message for a database error (`Display` says only "db
/// error"), else the client's.
pub(super) fn pg_message(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<StoreError> for crate::error::ApiError {
    fn from(e: StoreError) -> Self {
        Self::Storage {
            unavailable: matches!(e, StoreError::Unavailable(_)),
            detail: e.to_string(),
        }
    }
}
