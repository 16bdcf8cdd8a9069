//! Why a camera cannot be used, and what to do about it.

use std::io;
use std::path::{Path, PathBuf};

use crate::media::MediaError;

pub(super) const FIX_LIST: &str = "`doorbell devices` lists cameras";

/// Why a camera cannot be used, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}; {fix}", path.display())]
pub struct ProbeError {
    pub path: PathBuf,
    pub kind: ProbeErrorKind,
    /// What is wrong, without the path (`no such device`).
    pub reason: String,
    /// What to do about it.
    pub fix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeErrorKind {
    Missing,
    PermissionDenied,
    Busy,
    /// A V4L2 node that does not capture pictures (UVC metadata, codecs).
    NotCapture,
    NotV4l2,
    NoUsableFormat,
    Other,
}

impl ProbeError {
    pub(super) fn new(
        path: &Path,
        kind: ProbeErrorKind,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            kind,
            reason: reason.into(),
            fix: fix.into(),
        }
    }

    /// An OS error while doing `step` (`open it`, `set the format`).
    pub(super) fn os(path: &Path, step: &str, e: &io::Error) -> Self {
        use ProbeErrorKind::*;
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => Self::new(
                path,
                Missing,
                "no such device",
                format!("is the camera plugged in? {FIX_LIST}"),
            ),
            Some(libc::EACCES | libc::EPERM) => Self::new(
                path,
                PermissionDenied,
                "permission denied",
                "add the user to the `video` group (sudo usermod -aG video USER, then log in again) or run as the doorbell service user",
            ),
            Some(libc::EBUSY) => Self::new(
                path,
                Busy,
                "in use by another program",
                format!(
                    "stop the program using the camera (`fuser -v {}` shows which)",
                    path.display()
                ),
            ),
            Some(libc::ENOTTY) => Self::new(
                path,
                NotV4l2,
                "not a V4L2 video device",
                FIX_LIST,
            ),
            _ => Self::new(
                path,
                Other,
                format!("cannot {step}: {e}"),
                format!("{FIX_LIST}; unplugging and replugging the camera may help"),
            ),
        }
    }
}

/// Reads "camera: /dev/video0: no such device; ..." in the call's log.
impl From<ProbeError> for MediaError {
    fn from(e: ProbeError) -> Self {
        MediaError::Device {
            device: e.path.display().to_string(),
            message: format!("{}; {}", e.reason, e.fix),
        }
    }
}
