//! The [`FeatureSource`] trait: fetch a user's features under a deadline.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

use super::Features;

/// The future a [`FeatureSource`] returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Features, SourceError>> + Send + 'a>>;

/// What the engine asks a source for: one user, only the features the slot reads, and the
/// instant by which the answer is needed.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FetchRequest<'a> {
    /// The user whose features are wanted.
    pub user: &'a str,
    /// The feature names the slot reads (already de-duplicated).
    pub names: &'a [Box<str>],
    /// The answer is useless after this instant; a source should give up by then.
    pub deadline: Instant,
}

impl<'a> FetchRequest<'a> {
    /// A request for `names` of `user`, due by `deadline`.
    #[must_use]
    pub fn new(user: &'a str, names: &'a [Box<str>], deadline: Instant) -> Self {
        FetchRequest {
            user,
            names,
            deadline,
        }
    }
}

/// Why a feature fetch failed. The engine turns every one of these into a fallback decision;
/// none of them reaches the caller of `decide_for` as an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source did not answer before the request's deadline.
    #[error("feature source timed out")]
    Timeout,
    /// The source refused to try (for example, an open circuit breaker).
    #[error("feature source unavailable: {0}")]
    Unavailable(String),
    /// The source answered, but this user's stored data cannot be used (a key of the wrong
    /// type, a value that does not decode, a reply over the size cap). About one user, not
    /// about the source: a circuit breaker does not count it.
    #[error("feature data unusable: {0}")]
    Data(String),
    /// The backend failed; the underlying error is available through `source()`.
    #[error("feature source failed: {message}")]
    Backend {
        /// What was being done.
        message: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl SourceError {
    /// The source did not answer in time ([`SourceError::Timeout`]).
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, SourceError::Timeout)
    }

    /// Whether trying again later may succeed: a timeout, an unavailable source or a backend
    /// failure. A [`SourceError::Data`] error is about the stored data and stays until the
    /// data changes.
    ///
    /// ```
    /// use elvon::features::SourceError;
    ///
    /// assert!(SourceError::Timeout.is_timeout() && SourceError::Timeout.is_transient());
    /// assert!(!SourceError::Data("WRONGTYPE".into()).is_transient());
    /// ```
    #[must_use]
    pub fn is_transient(&self) -> bool {
        !matches!(self, SourceError::Data(_))
    }

    /// Wraps a backend error with a message saying what was being done.
    pub fn backend(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        SourceError::Backend {
            message: message.into(),
            source: Box::new(source),
        }
    }
}

/// Fetches a user's features. Implementations must be cheap to call concurrently and should
/// resolve by [`FetchRequest::deadline`]; the synchronous `Engine::decide_for` also stops
/// waiting at the deadline on its own.
///
/// The trait is object safe and async-capable: an in-memory source returns a ready future,
/// a network source (Redis) returns a real one.
pub trait FeatureSource: Send + Sync {
    /// Fetches the requested features of one user. Features the source does not have are
    /// simply absent from the result; that is not an error.
    fn fetch<'a>(&'a self, request: FetchRequest<'a>) -> FetchFuture<'a>;
}

impl<S: FeatureSource + ?Sized> FeatureSource for Arc<S> {
    fn fetch<'a>(&'a self, request: FetchRequest<'a>) -> FetchFuture<'a> {
        (**self).fetch(request)
    }
}

impl<S: FeatureSource + ?Sized> FeatureSource for Box<S> {
    fn fetch<'a>(&'a self, request: FetchRequest<'a>) -> FetchFuture<'a> {
        (**self).fetch(request)
    }
}

impl<S: FeatureSource + ?Sized> FeatureSource for &S {
    fn fetch<'a>(&'a self, request: FetchRequest<'a>) -> FetchFuture<'a> {
        (**self).fetch(request)
    }
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives `fut` on the current thread until it completes or `deadline` passes (`None`).
pub(crate) fn block_on<F: Future>(fut: F, deadline: Instant) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Some(out);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::park_timeout(deadline - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Never;
    impl Future for Never {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            Poll::Pending
        }
    }

    #[test]
    fn block_on_gives_up_at_the_deadline() {
        let start = Instant::now();
        assert!(block_on(Never, start + Duration::from_millis(20)).is_none());
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(20), "{took:?}");
        assert_eq!(block_on(async { 7 }, start), Some(7));
    }
}
