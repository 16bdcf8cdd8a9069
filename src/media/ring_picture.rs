//! The picture of a ring: taken once, at the press, and shared by whoever
//! shows it (the Telegram message, the history).
//!
//! The camera is opened once per ring: two openings would cost the second
//! one its settle frames again, and a camera cannot be opened twice at once.
//! The first to ask for a call's picture starts it on a blocking thread
//! ([`super::snapshot::take`]); everyone awaits the same result. The
//! pictures of the last [`RingPictures::KEPT`] calls are kept.

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{snapshot, MediaOpener};

/// A camera that gives no picture in this long is given up for this ring.
pub const SNAPSHOT_LIMIT: Duration = Duration::from_secs(3);

/// A ring's JPEG, when the camera gave one.
pub type Picture = Shared<BoxFuture<'static, Option<Bytes>>>;

#[derive(Clone)]
pub struct RingPictures {
    inner: Arc<Inner>,
}

struct Inner {
    media: Arc<dyn MediaOpener>,
    settle_frames: usize,
    calls: Mutex<BTreeMap<u64, Picture>>,
}

impl RingPictures {
    pub const KEPT: usize = 16;

    pub fn new(media: Arc<dyn MediaOpener>, settle_frames: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                media,
                settle_frames,
                calls: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The picture of `call`, started now if nobody asked before. Needs a
    /// tokio runtime.
    pub fn of(&self, call: u64) -> Picture {
        let mut calls = self.inner.calls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = calls.get(&call) {
            return p.clone();
        }
        let picture = self.take();
        calls.insert(call, picture.clone());
        while calls.len() > Self::KEPT {
            calls.pop_first();
        }
        picture
    }

    fn take(&self) -> Picture {
        let media = self.inner.media.clone();
        let settle = self.inner.settle_frames;
        let job = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let work = tokio::task::spawn_blocking(move || snapshot::take(media.as_ref(), settle));
            let why = match tokio::time::timeout(SNAPSHOT_LIMIT, work).await {
                Ok(Ok(Ok(Some(jpeg)))) => {
                    tracing::debug!("ring picture {jpeg:?} in {:?}", started.elapsed());
                    return Some(Bytes::from(jpeg.data));
                }
                Ok(Ok(Ok(None))) => return None,
                Ok(Ok(Err(e))) => e.to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("the camera gave none in {} s", SNAPSHOT_LIMIT.as_secs()),
            };
            tracing::warn!("no picture of the visitor for this ring: {why}");
            None
        });
        async move { job.await.ok().flatten() }.boxed().shared()
    }
}
