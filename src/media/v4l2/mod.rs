//! `v4l2:/dev/videoN`: a camera through Video4Linux2. The only module that
//! uses the `v4l` crate, split by concern: [`ioctl`] (the requests, read
//! leniently), [`list`] (the machine's cameras, `doorbell check`), [`capture`]
//! (streaming and its failures), [`clock`] (when a frame was taken) and
//! [`error`] (why a camera cannot be used); the format conversion is in
//! `media::convert`.
//!
//! A call opens the camera ([`V4l2Camera::open`]) and drops it at the end, so
//! the camera (and its LED) is off between calls. Opening reads the camera's
//! formats, sizes and rates, lets [`negotiate`](super::negotiate) choose,
//! sets that, and maps a few capture buffers; the first
//! [`next_frame`](VideoSource::next_frame) starts streaming. Each frame is
//! converted to I420 ([`convert`](super::convert)) at exactly the configured
//! size (cropped and scaled when the camera has no such size), stamped with
//! the time the driver says it was captured, and thinned to the configured
//! rate when the camera runs faster.
//!
//! Failure is part of the design, because USB cameras get unplugged and send
//! the odd broken frame:
//!
//! - a damaged or undecodable frame is skipped; only when nothing usable
//!   arrives for [`BAD_FRAMES_LIMIT`] does the camera count as failed;
//! - waiting for a frame is bounded (poll with a timeout), so an unplugged or
//!   stalled camera ends the video within about a second with an error that
//!   says so; the call keeps its audio (`media::video` reports it);
//! - opening fails with a reason and a fix ([`ProbeError`]), which the call
//!   logs before going on audio only, and `doorbell check` prints ([`probe`]);
//! - the `v4l` crate panics in its `Drop` on unusual driver errors; closing
//!   catches that, so a misbehaving camera cannot take the doorbell down.
//!
//! [`list_cameras`] is what `doorbell devices` shows.

pub mod capture;
pub mod clock;
pub mod error;
pub mod ioctl;
pub mod list;
#[cfg(test)]
mod tests;

pub use capture::{V4l2Camera, BAD_FRAMES_LIMIT};
pub use error::{ProbeError, ProbeErrorKind};
pub use list::{list_cameras, probe, CameraInfo};
