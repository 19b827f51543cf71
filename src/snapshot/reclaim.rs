//! Freeing replaced snapshots off the request path.
//!
//! A decision holds its snapshot, so after a swap the last decision of the old config to be
//! dropped would free it, on whatever request thread that happens: with a large config that
//! is hundreds of milliseconds of `free`. Instead the swapping thread retires the old
//! snapshot here: if nothing else holds it, it is freed right away (on the swapping thread);
//! otherwise a background thread (`elvon-reclaim`, started when needed, ending when it has
//! nothing left) keeps a reference and frees it once it holds the last one.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::Snapshot;

/// How often the reclaimer looks at the snapshots it keeps.
const PERIOD: Duration = Duration::from_millis(10);

/// Retired snapshots still referenced elsewhere, and whether the reclaimer runs.
static RETIRED: Mutex<(Vec<Arc<Snapshot>>, bool)> = Mutex::new((Vec::new(), false));

/// Takes a snapshot that was swapped out; frees it now or once its last user lets go.
pub(crate) fn retire(old: Arc<Snapshot>) {
    if Arc::strong_count(&old) == 1 {
        drop(old);
        return;
    }
    let mut r = RETIRED.lock().unwrap_or_else(PoisonError::into_inner);
    r.0.push(old);
    if !r.1 {
        // Without a thread the snapshots stay listed; the next retire tries again.
        r.1 = crate::background::spawn_while_needed("elvon-reclaim", PERIOD, reclaim);
    }
}

/// Frees the retired snapshots nothing else holds (outside the lock); `false` once none is
/// left, which ends the thread.
fn reclaim() -> bool {
    let (free, more) = {
        let mut r = RETIRED.lock().unwrap_or_else(PoisonError::into_inner);
        let (done, keep): (Vec<_>, Vec<_>) = r.0.drain(..).partition(|s| Arc::strong_count(s) == 1);
        r.0 = keep;
        let more = !r.0.is_empty();
        r.1 = more;
        (done, more)
    };
    drop(free);
    more
}
