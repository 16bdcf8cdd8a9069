//! The seam between the encoder's logic and the kernel: [`M2mDevice`], one
//! typed method per ioctl the encoder makes, with plain Rust values in and
//! out. [`RealDevice`] makes the ioctls on an open device node; the tests
//! use `FakeM2m` (feature `testkit`), which records the calls and answers
//! like the Raspberry Pi's driver.

use std::io;
use std::time::Duration;

/// One of the two queues of a memory-to-memory device. The names are the
/// kernel's, seen from the application: pictures go *out* to the encoder,
/// the H.264 stream is *captured* from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Queue {
    /// Raw pictures in (`V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE`).
    Output,
    /// The encoded stream out (`V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE`).
    Capture,
}

/// What `VIDIOC_QUERYCAP` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    pub driver: String,
    pub card: String,
    /// The capabilities of this device node (`device_caps` where the driver
    /// gives it, else `capabilities`).
    pub caps: u32,
}

/// A single-plane format, asked for and answered (`v4l2_pix_format_mplane`
/// with one plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixFormat {
    pub width: u32,
    pub height: u32,
    pub fourcc: u32,
    pub bytesperline: u32,
    pub sizeimage: u32,
}

/// Where a buffer is, for `mmap` (`VIDIOC_QUERYBUF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferInfo {
    pub length: u32,
    pub offset: u32,
}

/// A buffer the driver is done with (`VIDIOC_DQBUF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub index: u32,
    pub bytesused: u32,
    pub data_offset: u32,
    pub flags: u32,
}

/// What `poll` found; all false when the time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready {
    /// A capture buffer (encoded data) can be dequeued.
    pub capture: bool,
    /// An output buffer (a picture consumed) can be dequeued.
    pub output: bool,
    /// The driver reports an error (`POLLERR`).
    pub error: bool,
}

/// A V4L2 memory-to-memory device, multi-planar API, one plane per buffer,
/// `MMAP` memory. Closed when dropped.
pub trait M2mDevice: Send {
    fn querycap(&mut self) -> io::Result<Caps>;
    /// The `index`-th format of `queue`; `None` past the last.
    fn enum_fmt(&mut self, queue: Queue, index: u32) -> io::Result<Option<u32>>;
    /// Sets the format; the answer is what the driver made of it.
    fn s_fmt(&mut self, queue: Queue, want: PixFormat) -> io::Result<PixFormat>;
    /// Sets the frame interval to 1/`fps`.
    fn s_parm(&mut self, queue: Queue, fps: u32) -> io::Result<()>;
    fn s_ctrl(&mut self, id: u32, value: i32) -> io::Result<()>;
    /// Asks for `count` buffers (0: frees them); the answer is how many the
    /// driver gave.
    fn reqbufs(&mut self, queue: Queue, count: u32) -> io::Result<u32>;
    fn querybuf(&mut self, queue: Queue, index: u32) -> io::Result<BufferInfo>;
    fn mmap(&mut self, queue: Queue, index: u32, info: BufferInfo) -> io::Result<()>;
    /// The memory of a mapped buffer; `None` if it is not mapped.
    fn buffer(&mut self, queue: Queue, index: u32) -> Option<&mut [u8]>;
    fn munmap(&mut self, queue: Queue, index: u32);
    /// Hands a buffer to the driver: a picture of `bytesused` bytes on the
    /// output queue, an empty buffer to fill on the capture queue.
    fn qbuf(
        &mut self,
        queue: Queue,
        index: u32,
        bytesused: u32,
        timestamp: Duration,
    ) -> io::Result<()>;
    /// Takes back a buffer the driver is done with; `None` if none is.
    fn dqbuf(&mut self, queue: Queue) -> io::Result<Option<Done>>;
    fn streamon(&mut self, queue: Queue) -> io::Result<()>;
    fn streamoff(&mut self, queue: Queue) -> io::Result<()>;
    /// Waits until a buffer can be dequeued from either queue, at most
    /// `timeout`.
    fn poll(&mut self, timeout: Duration) -> io::Result<Ready>;
}

#[cfg(target_pointer_width = "64")]
pub use real::RealDevice;

#[cfg(target_pointer_width = "64")]
mod real {
    use super::super::sys::*;
    use super::*;
    use std::collections::BTreeMap;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    /// A device node opened non-blocking, and the buffers mapped from it.
    pub struct RealDevice {
        fd: OwnedFd,
        maps: BTreeMap<(Queue, u32), (*mut u8, usize)>,
    }

    // SAFETY: the mappings are owned by this value alone (nothing else holds
    // their pointers), so moving it to another thread moves them with it.
    unsafe impl Send for RealDevice {}

    fn buf_type(queue: Queue) -> u32 {
        match queue {
            Queue::Output => BUF_TYPE_VIDEO_OUTPUT_MPLANE,
            Queue::Capture => BUF_TYPE_VIDEO_CAPTURE_MPLANE,
        }
    }

    fn text(bytes: &[u8]) -> String {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }

    impl RealDevice {
        pub fn open(path: &Path) -> io::Result<RealDevice> {
            let name = std::ffi::CString::new(path.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
            // SAFETY: a valid C string; the descriptor is owned at once.
            let fd = unsafe {
                libc::open(
                    name.as_ptr(),
                    libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(RealDevice {
                // SAFETY: `fd` was just opened and is owned by nobody else.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                maps: BTreeMap::new(),
            })
        }

        /// One ioctl, retried when a signal interrupts it.
        fn ioctl<T>(&self, request: u32, arg: &mut T) -> io::Result<()> {
            loop {
                // SAFETY: `arg` is the struct this request reads and writes,
                // with the kernel's layout (see sys.rs and its tests).
                let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), request as _, arg as *mut T) };
                if r >= 0 {
                    return Ok(());
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }

        fn buffer_struct(queue: Queue, index: u32, plane: &mut v4l2_plane) -> v4l2_buffer {
            let mut b: v4l2_buffer = zeroed();
            b.index = index;
            b.type_ = buf_type(queue);
            b.memory = MEMORY_MMAP;
            b.m.planes = plane;
            b.length = 1;
            b
        }
    }

    impl M2mDevice for RealDevice {
        fn querycap(&mut self) -> io::Result<Caps> {
            let mut c: v4l2_capability = zeroed();
            self.ioctl(VIDIOC_QUERYCAP, &mut c)?;
            Ok(Caps {
                driver: text(&c.driver),
                card: text(&c.card),
                caps: if c.capabilities & CAP_DEVICE_CAPS != 0 {
                    c.device_caps
                } else {
                    c.capabilities
                },
            })
        }

        fn enum_fmt(&mut self, queue: Queue, index: u32) -> io::Result<Option<u32>> {
            let mut d: v4l2_fmtdesc = zeroed();
            d.index = index;
            d.type_ = buf_type(queue);
            match self.ioctl(VIDIOC_ENUM_FMT, &mut d) {
                Ok(()) => Ok(Some(d.pixelformat)),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
                Err(e) => Err(e),
            }
        }

        fn s_fmt(&mut self, queue: Queue, want: PixFormat) -> io::Result<PixFormat> {
            let mut f: v4l2_format = zeroed();
            f.type_ = buf_type(queue);
            let mut pix: v4l2_pix_format_mplane = zeroed();
            pix.width = want.width;
            pix.height = want.height;
            pix.pixelformat = want.fourcc;
            pix.field = FIELD_NONE;
            pix.num_planes = 1;
            pix.plane_fmt[0].bytesperline = want.bytesperline;
            pix.plane_fmt[0].sizeimage = want.sizeimage;
            f.fmt.pix_mp = pix;
            self.ioctl(VIDIOC_S_FMT, &mut f)?;
            // SAFETY: the driver answers a multi-planar type in `pix_mp`.
            let got = unsafe { f.fmt.pix_mp };
            let plane = got.plane_fmt[0];
            Ok(PixFormat {
                width: got.width,
                height: got.height,
                fourcc: got.pixelformat,
                bytesperline: plane.bytesperline,
                sizeimage: plane.sizeimage,
            })
        }

        fn s_parm(&mut self, queue: Queue, fps: u32) -> io::Result<()> {
            let mut p: v4l2_streamparm = zeroed();
            p.type_ = buf_type(queue);
            let mut out: v4l2_outputparm = zeroed();
            out.timeperframe = v4l2_fract {
                numerator: 1,
                denominator: fps,
            };
            p.parm.output = out;
            self.ioctl(VIDIOC_S_PARM, &mut p)
        }

        fn s_ctrl(&mut self, id: u32, value: i32) -> io::Result<()> {
            let mut control = v4l2_ext_control {
                id,
                size: 0,
                reserved2: [0],
                value64: value as i64,
            };
            let mut controls: v4l2_ext_controls = zeroed();
            controls.which = CTRL_CLASS_CODEC;
            controls.count = 1;
            controls.controls = &mut control;
            match self.ioctl(VIDIOC_S_EXT_CTRLS, &mut controls) {
                // A driver without extended controls: the old single call.
                Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
                    self.ioctl(VIDIOC_S_CTRL, &mut v4l2_control { id, value })
                }
                other => other,
            }
        }

        fn reqbufs(&mut self, queue: Queue, count: u32) -> io::Result<u32> {
            let mut r: v4l2_requestbuffers = zeroed();
            r.count = count;
            r.type_ = buf_type(queue);
            r.memory = MEMORY_MMAP;
            self.ioctl(VIDIOC_REQBUFS, &mut r)?;
            Ok(r.count)
        }

        fn querybuf(&mut self, queue: Queue, index: u32) -> io::Result<BufferInfo> {
            let mut plane: v4l2_plane = zeroed();
            let mut b = Self::buffer_struct(queue, index, &mut plane);
            self.ioctl(VIDIOC_QUERYBUF, &mut b)?;
            Ok(BufferInfo {
                length: plane.length,
                // SAFETY: MMAP buffers answer their offset in `mem_offset`.
                offset: unsafe { plane.m.mem_offset },
            })
        }

        fn mmap(&mut self, queue: Queue, index: u32, info: BufferInfo) -> io::Result<()> {
            let len = info.length as usize;
            // SAFETY: maps `len` bytes the driver offers at this offset; the
            // mapping is kept in `maps` and unmapped once.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    self.fd.as_raw_fd(),
                    info.offset as libc::off_t,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            if let Some((old, old_len)) = self.maps.insert((queue, index), (ptr.cast(), len)) {
                // SAFETY: a mapping of ours, replaced and no longer used.
                unsafe { libc::munmap(old.cast(), old_len) };
            }
            Ok(())
        }

        fn buffer(&mut self, queue: Queue, index: u32) -> Option<&mut [u8]> {
            let &(ptr, len) = self.maps.get(&(queue, index))?;
            // SAFETY: a live mapping of `len` bytes, borrowed through `&mut
            // self` so that no other slice of it exists at the same time.
            Some(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
        }

        fn munmap(&mut self, queue: Queue, index: u32) {
            if let Some((ptr, len)) = self.maps.remove(&(queue, index)) {
                // SAFETY: a mapping of ours, removed from `maps` first.
                unsafe { libc::munmap(ptr.cast(), len) };
            }
        }

        fn qbuf(
            &mut self,
            queue: Queue,
            index: u32,
            bytesused: u32,
            timestamp: Duration,
        ) -> io::Result<()> {
            let mut plane: v4l2_plane = zeroed();
            plane.bytesused = bytesused;
            plane.length = self
                .maps
                .get(&(queue, index))
                .map_or(0, |&(_, len)| len as u32);
            let mut b = Self::buffer_struct(queue, index, &mut plane);
            b.field = FIELD_NONE;
            b.timestamp = timeval {
                tv_sec: timestamp.as_secs() as i64,
                tv_usec: timestamp.subsec_micros() as i64,
            };
            self.ioctl(VIDIOC_QBUF, &mut b)
        }

        fn dqbuf(&mut self, queue: Queue) -> io::Result<Option<Done>> {
            let mut plane: v4l2_plane = zeroed();
            let mut b = Self::buffer_struct(queue, 0, &mut plane);
            match self.ioctl(VIDIOC_DQBUF, &mut b) {
                Ok(()) => Ok(Some(Done {
                    index: b.index,
                    bytesused: plane.bytesused,
                    data_offset: plane.data_offset,
                    flags: b.flags,
                })),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e),
            }
        }

        fn streamon(&mut self, queue: Queue) -> io::Result<()> {
            let mut t = buf_type(queue) as i32;
            self.ioctl(VIDIOC_STREAMON, &mut t)
        }

        fn streamoff(&mut self, queue: Queue) -> io::Result<()> {
            let mut t = buf_type(queue) as i32;
            self.ioctl(VIDIOC_STREAMOFF, &mut t)
        }

        fn poll(&mut self, timeout: Duration) -> io::Result<Ready> {
            let mut p = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN | libc::POLLOUT,
                revents: 0,
            };
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            loop {
                // SAFETY: one valid pollfd.
                let r = unsafe { libc::poll(&mut p, 1, ms) };
                if r >= 0 {
                    break;
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            Ok(Ready {
                capture: p.revents & libc::POLLIN != 0,
                output: p.revents & libc::POLLOUT != 0,
                error: p.revents & libc::POLLERR != 0,
            })
        }
    }

    impl Drop for RealDevice {
        fn drop(&mut self) {
            for (_, (ptr, len)) in std::mem::take(&mut self.maps) {
                // SAFETY: mappings of ours, each unmapped once.
                unsafe { libc::munmap(ptr.cast(), len) };
            }
            // The descriptor closes with `fd`.
        }
    }
}
