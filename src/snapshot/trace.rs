//! Optional evaluation tracing: a no-op for `decide`, a step list for `explain`.

/// Receives human-readable evaluation steps. The no-op implementation compiles away.
pub(crate) trait Trace {
    fn note(&mut self, step: impl FnOnce() -> String);
}

/// Tracing disabled.
pub(crate) struct NoTrace;

impl Trace for NoTrace {
    #[inline(always)]
    fn note(&mut self, _: impl FnOnce() -> String) {}
}

impl Trace for Vec<String> {
    fn note(&mut self, step: impl FnOnce() -> String) {
        self.push(step());
    }
}

impl<T: Trace + ?Sized> Trace for &mut T {
    #[inline(always)]
    fn note(&mut self, step: impl FnOnce() -> String) {
        (**self).note(step);
    }
}
