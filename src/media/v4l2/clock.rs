//! When a frame was captured: the driver's timestamp, on the clock of
//! [`Instant`] when it is monotonic.

use std::time::{Duration, Instant};

use v4l::buffer::Metadata;

/// When the frame was captured: the driver's timestamp when it is on the
/// monotonic clock (the clock of [`Instant`]), else when we received it.
pub(super) fn capture_time(meta: &Metadata, received: Instant) -> (Instant, u64) {
    let now_unix = crate::media::unix_ms();
    let monotonic = u32::from(meta.flags) & 0xE000 == 0x2000; // V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC
    if let (true, Some(now), Some(stamp)) = (monotonic, monotonic_now(), timestamp(meta)) {
        if let Some(age) = now
            .checked_sub(stamp)
            .filter(|a| *a < Duration::from_secs(1))
        {
            return (
                received.checked_sub(age).unwrap_or(received),
                now_unix.saturating_sub(age.as_millis() as u64),
            );
        }
    }
    (received, now_unix)
}

// time_t is i32 on 32-bit Raspberry Pi OS and i64 elsewhere.
#[allow(clippy::useless_conversion)]
pub(super) fn timestamp(meta: &Metadata) -> Option<Duration> {
    let sec = u64::try_from(i64::from(meta.timestamp.sec)).ok()?;
    let usec = u32::try_from(i64::from(meta.timestamp.usec)).ok()?;
    (usec < 1_000_000).then(|| Duration::new(sec, usec * 1000))
}

pub(super) fn monotonic_now() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid `ts`.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}
