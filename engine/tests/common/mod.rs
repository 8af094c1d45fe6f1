//! What the engine's test files share.

use async_trait::async_trait;
use hypercode_engine::{MissionId, Wake, WakeError};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The tests drive runs themselves, so wake-ups only need to be counted; none is ever taken off
/// this queue, so every one sent is still waiting.
#[derive(Default)]
pub struct CountWakes(AtomicUsize);

#[async_trait]
impl Wake for CountWakes {
    async fn wake(&self, _: MissionId) -> Result<(), WakeError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn depth(&self) -> Result<u64, WakeError> {
        Ok(self.0.load(Ordering::SeqCst) as u64)
    }
}
