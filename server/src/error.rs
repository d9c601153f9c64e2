//! Errors a caller can act on, and their mapping to gRPC status codes.
//!
//! Internal details (SQL, paths, IO) are logged, never sent to clients.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Unavailable(String),
    /// A failure of the server's own; the message is for the caller (what
    /// did not happen), the cause was logged where it happened.
    #[error("{0}")]
    Internal(String),
    /// The session runs on another server sharing the records; `url` is
    /// where that server is, when it advertises it. FAILED_PRECONDITION,
    /// with the URL also in the `huashen-session-server` metadata.
    #[error("{message}")]
    Elsewhere {
        message: String,
        url: Option<String>,
    },
    /// Storage failed (the store converts its errors into this). The
    /// detail is logged, never sent: the caller learns only whether to
    /// retry (`unavailable`).
    #[error("{detail}")]
    Storage { unavailable: bool, detail: String },
    /// Too many calls of this kind from this caller: RESOURCE_EXHAUSTED,
    /// with the seconds to wait in the `retry-after` metadata.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    /// A status from the transport (a broken or oversize client stream),
    /// passed through unchanged.
    #[error("{0}")]
    Transport(#[from] Status),
}

impl ApiError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::AlreadyExists(m) => Status::already_exists(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::ResourceExhausted(m) => Status::resource_exhausted(m),
            ApiError::Unauthenticated(m) => Status::unauthenticated(m),
            ApiError::Unimplemented(m) => Status::unimplemented(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Internal(m) => Status::internal(m),
            ApiError::Elsewhere { message, url } => {
                let mut status = Status::failed_precondition(message);
                if let Some(v) = url.and_then(|u| u.parse().ok()) {
                    status.metadata_mut().insert(SESSION_SERVER, v);
                }
                status
            }
            ApiError::RateLimited {
                message,
                retry_after,
            } => {
                let mut status = Status::resource_exhausted(message);
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                if let Ok(v) = secs.to_string().parse() {
                    status.metadata_mut().insert(RETRY_AFTER, v);
                }
                status
            }
            ApiError::Transport(s) => s,
            ApiError::Storage {
                unavailable: true,
                detail,
            } => {
                tracing::error!(error = %detail, "storage unavailable");
                Status::unavailable(
                    "storage is unavailable; the operation was not completed, retry shortly",
                )
            }
            ApiError::Storage { detail, .. } => {
                tracing::error!(error = %detail, "storage failure");
                Status::internal("internal storage error; the operation was not completed")
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Status metadata: the base URL of the server running the session, for a
/// client that asked another server sharing the records.
pub const SESSION_SERVER: &str = "huashen-session-server";

/// Status metadata of a rate-limited call: whole seconds to wait.
pub const RETRY_AFTER: &str = "retry-after";
