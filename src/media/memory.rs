//! A speaker that keeps what it is given, for tests (feature `testkit`).

use std::sync::{Arc, Mutex};

use super::{AudioSink, MediaError};

/// Collects every sample written to it; the shared buffer reads them back.
pub struct MemorySink(Arc<Mutex<Vec<i16>>>);

impl MemorySink {
    /// The sink, and the buffer it fills.
    pub fn new() -> (MemorySink, Arc<Mutex<Vec<i16>>>) {
        let samples = Arc::new(Mutex::new(Vec::new()));
        (MemorySink(samples.clone()), samples)
    }
}

impl AudioSink for MemorySink {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(pcm);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
