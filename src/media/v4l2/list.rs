//! The cameras of this machine, as `doorbell devices` lists them, and what
//! `doorbell check` says about a configured one.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::media::negotiate::FormatDesc;

use super::capture::*;
use super::error::*;
use super::ioctl::*;

/// A V4L2 capture device as `doorbell devices` shows it.
#[derive(Debug, Clone)]
pub struct CameraInfo {
    pub path: PathBuf,
    /// Names under `/dev/v4l/by-id` for this node: they survive reboots and
    /// re-plugging into another port, unlike `/dev/videoN`.
    pub stable_names: Vec<PathBuf>,
    pub card: String,
    pub driver: String,
    pub bus: String,
    pub formats: Vec<FormatDesc>,
    /// Set when the node could not be opened or read.
    pub error: Option<ProbeError>,
}

impl fmt::Display for CameraInfo {
    /// A block: the node on the first line, details indented below.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if !self.card.is_empty() {
            write!(f, ": {}", self.card)?;
        }
        if !self.driver.is_empty() {
            write!(f, " ({}, {})", self.driver, self.bus)?;
        }
        if let Some(e) = &self.error {
            write!(f, "\n    {}; {}", e.reason, e.fix)?;
        }
        for name in &self.stable_names {
            write!(f, "\n    stable name: v4l2:{}", name.display())?;
        }
        for format in &self.formats {
            write!(f, "\n    {}", format.to_string().replace('\n', "\n  "))?;
        }
        Ok(())
    }
}

/// The V4L2 capture devices of this machine (`/dev/video*` nodes that
/// capture pictures, and those that could not be opened, with the reason).
/// Metadata nodes and memory-to-memory codecs are left out.
pub fn list_cameras() -> Vec<CameraInfo> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix("video")?.parse::<u32>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    let stable = stable_names();
    nodes
        .into_iter()
        .filter_map(|(_, path)| {
            let mut info = describe_node(&path)?;
            info.stable_names = stable.get(&path).cloned().unwrap_or_default();
            Some(info)
        })
        .collect()
}

/// `/dev/v4l/by-id/*` by the node they point to.
pub(super) fn stable_names() -> HashMap<PathBuf, Vec<PathBuf>> {
    let mut map: HashMap<PathBuf, Vec<PathBuf>> = HashMap::new();
    for entry in std::fs::read_dir("/dev/v4l/by-id")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(target) = std::fs::canonicalize(entry.path()) {
            map.entry(target).or_default().push(entry.path());
        }
    }
    for names in map.values_mut() {
        names.sort();
    }
    map
}

/// `None` for nodes that open but do not capture pictures.
pub(super) fn describe_node(path: &Path) -> Option<CameraInfo> {
    let mut info = CameraInfo {
        path: path.to_path_buf(),
        stable_names: Vec::new(),
        card: String::new(),
        driver: String::new(),
        bus: String::new(),
        formats: Vec::new(),
        error: None,
    };
    let device = match open_device(path) {
        Ok(d) => d,
        Err(e) => {
            // The name is world-readable even when the node is not.
            info.card = sysfs_name(path).unwrap_or_default();
            info.error = Some(e);
            return Some(info);
        }
    };
    match query_caps(&device) {
        Ok(caps) => {
            if check_capture(path, &caps).is_err() {
                return None;
            }
            info.card = caps.card;
            info.driver = caps.driver;
            info.bus = caps.bus;
        }
        Err(e) => {
            info.error = Some(ProbeError::os(path, "query it", &e));
            return Some(info);
        }
    }
    info.formats = read_formats(&device, None);
    Some(info)
}

pub(super) fn sysfs_name(path: &Path) -> Option<String> {
    let node = path.file_name()?.to_str()?;
    let name = std::fs::read_to_string(format!("/sys/class/video4linux/{node}/name")).ok()?;
    Some(name.trim().to_string())
}

/// What `doorbell check` says about a configured camera: what would be used
/// (`YUYV 640x480@30`), or why it cannot be.
pub fn probe(path: &Path, width: u32, height: u32, fps: u32) -> Result<String, ProbeError> {
    let camera = V4l2Camera::open(path, width, height, fps)?;
    Ok(format!("{} ({})", camera.setup, camera.card))
}
