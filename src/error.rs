//! The operator's one error type. Errors mean "retry later"; a user's mistake is a condition.

use crate::baseten::BasetenError;

/// Why a reconcile must be retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// A Baseten call failed in a way that may pass (5xx, network, 429).
    #[error(transparent)]
    Baseten(#[from] BasetenError),
    /// The object lacks a field the API server always sets.
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    /// The remote delete cannot run; the resource's status says why and how to release it.
    #[error("deleting the Baseten secret is blocked; see the resource's Ready condition")]
    DeletionBlocked,
    /// Adding or removing the cleanup finalizer failed, or the step it wraps did.
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The error of the step itself, looking through the finalizer helper's wrapping.
    pub fn cause(&self) -> &Error {
        use kube::runtime::finalizer::Error as Finalizer;
        match self {
            Self::Finalizer(wrapped) => match wrapped.as_ref() {
                Finalizer::ApplyFailed(inner) | Finalizer::CleanupFailed(inner) => inner.cause(),
                _ => self,
            },
            _ => self,
        }
    }

    /// A fixed, bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self.cause() {
            Self::Finalizer(_) => "finalizer",
            Self::DeletionBlocked => "deletion_blocked",
            Self::Kube(_) => "kube",
            Self::Baseten(BasetenError::RateLimited { .. }) => "baseten_rate_limited",
            Self::Baseten(BasetenError::Unavailable { .. }) => "baseten_unavailable",
            Self::Baseten(BasetenError::Transport(_)) => "baseten_transport",
            Self::Baseten(BasetenError::Unauthorized { .. }) => "baseten_unauthorized",
            Self::Baseten(BasetenError::Rejected { .. }) => "baseten_rejected",
            Self::Baseten(BasetenError::TeamNotFound(_)) => "baseten_team_not_found",
            Self::MissingObjectKey(_) => "missing_object_key",
        }
    }
}

/// Result of operator code.
pub type Result<T, E = Error> = std::result::Result<T, E>;
