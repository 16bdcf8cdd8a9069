//! `FakeM2m`: a scripted stand-in for the Raspberry Pi's encoder device
//! (feature `testkit`). It records every call in order, answers like the
//! `bcm2835-codec` driver (rows rounded up to 32 bytes, a 512 KiB stream
//! buffer, an access unit per picture, the key frame flag on IDRs, SPS and
//! PPS before each IDR once `REPEAT_SEQ_HEADER` is set), and can be told
//! to fail any step.
//!
//! The "hardware" works while the encoder waits: a queued picture is
//! encoded in `poll`, as the real one finishes between `QBUF` and the
//! wake-up. The access units are canned (a Constrained Baseline SPS, a PPS,
//! an IDR or non-IDR slice carrying the frame number): enough for the
//! encoder's bookkeeping, not a picture a decoder shows.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::device::{BufferInfo, Caps, Done, M2mDevice, PixFormat, Queue, Ready};
use super::sys::*;

/// One call on the device, with what identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    QueryCap,
    EnumFmt(Queue, u32),
    /// The format asked for (not the answer).
    SFmt(Queue, PixFormat),
    SParm(Queue, u32),
    SCtrl(u32, i32),
    ReqBufs(Queue, u32),
    QueryBuf(Queue, u32),
    Mmap(Queue, u32),
    Munmap(Queue, u32),
    /// Queue, index, bytes used.
    QBuf(Queue, u32, u32),
    /// Queue, and the index dequeued (`None`: nothing was ready).
    DqBuf(Queue, Option<u32>),
    StreamOn(Queue),
    StreamOff(Queue),
    Poll,
    Close,
}

/// A step that can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    QueryCap,
    SFmt(Queue),
    ReqBufs(Queue),
    QueryBuf,
    Mmap,
    QBuf(Queue),
    DqBuf(Queue),
    StreamOn,
    Poll,
}

/// How the fake behaves. `Script::default()` is a healthy `bcm2835-codec`.
#[derive(Debug, Clone)]
pub struct Script {
    pub driver: String,
    pub card: String,
    /// What `QUERYCAP` says this node can do.
    pub caps: u32,
    /// The formats `ENUM_FMT` lists on the capture queue.
    pub coded_formats: Vec<u32>,
    /// The formats `ENUM_FMT` lists on the output queue.
    pub raw_formats: Vec<u32>,
    /// Bytes per row are rounded up to a multiple of this.
    pub stride_align: u32,
    /// Picture heights are rounded up to a multiple of this.
    pub height_align: u32,
    /// Controls refused with `EINVAL`, by id, with the values refused
    /// (empty: every value).
    pub refuse: Vec<(u32, Vec<i32>)>,
    /// A step that fails with this errno.
    pub fail: Option<(Step, i32)>,
    /// Encoded buffers never come back (`poll` times out).
    pub never_answer: bool,
    /// Encoded buffers come back flagged `V4L2_BUF_FLAG_ERROR`.
    pub error_flag: bool,
    /// The first SPS and PPS come in a buffer of their own.
    pub headers_apart: bool,
    /// Frames (from 0) answered with an empty buffer: skipped.
    pub skip: Vec<u64>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            driver: "bcm2835-codec".into(),
            card: "bcm2835-codec-encode".into(),
            caps: CAP_VIDEO_M2M_MPLANE | CAP_STREAMING,
            coded_formats: vec![PIX_FMT_H264],
            raw_formats: vec![PIX_FMT_YUV420, fourcc(b"NV12")],
            stride_align: 32,
            height_align: 1,
            refuse: Vec::new(),
            fail: None,
            never_answer: false,
            error_flag: false,
            headers_apart: false,
            skip: Vec::new(),
        }
    }
}

/// What the test reads back, also after the device is dropped.
#[derive(Debug, Default)]
struct Record {
    calls: Vec<Call>,
    controls: BTreeMap<u32, i32>,
    /// Each picture as it was queued (its `bytesused` bytes).
    pictures: Vec<Vec<u8>>,
    /// Each access unit as it was handed back.
    units: Vec<Vec<u8>>,
}

/// The test's view of a [`FakeM2m`].
#[derive(Debug, Clone)]
pub struct FakeHandle(Arc<Mutex<Record>>);

impl FakeHandle {
    fn get(&self) -> std::sync::MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.get().calls.clone()
    }

    /// The value a control was last set to.
    pub fn control(&self, id: u32) -> Option<i32> {
        self.get().controls.get(&id).copied()
    }

    /// The pictures queued so far, as bytes in the output buffers.
    pub fn pictures(&self) -> Vec<Vec<u8>> {
        self.get().pictures.clone()
    }
}

/// The scripted device.
pub struct FakeM2m {
    script: Script,
    record: Arc<Mutex<Record>>,
    formats: BTreeMap<Queue, PixFormat>,
    buffers: BTreeMap<Queue, Vec<Vec<u8>>>,
    mapped: BTreeMap<(Queue, u32), ()>,
    queued: BTreeMap<Queue, VecDeque<(u32, u32)>>,
    done: BTreeMap<Queue, VecDeque<Done>>,
    streaming: BTreeMap<Queue, bool>,
    frames: u64,
    force: bool,
    sent_headers: bool,
}

const SPS: &[u8] = &[
    0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35,
];
const PPS: &[u8] = &[0, 0, 0, 1, 0x68, 0xce, 0x06, 0xe2];

impl FakeM2m {
    pub fn new(script: Script) -> (FakeM2m, FakeHandle) {
        let record = Arc::new(Mutex::new(Record::default()));
        let fake = FakeM2m {
            script,
            record: record.clone(),
            formats: BTreeMap::new(),
            buffers: BTreeMap::new(),
            mapped: BTreeMap::new(),
            queued: BTreeMap::new(),
            done: BTreeMap::new(),
            streaming: BTreeMap::new(),
            frames: 0,
            force: false,
            sent_headers: false,
        };
        (fake, FakeHandle(record))
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, call: Call) {
        self.record().calls.push(call);
    }

    fn check(&self, step: Step) -> io::Result<()> {
        match self.script.fail {
            Some((s, errno)) if s == step => Err(io::Error::from_raw_os_error(errno)),
            _ => Ok(()),
        }
    }

    fn control(&self, id: u32) -> Option<i32> {
        self.record().controls.get(&id).copied()
    }

    /// Encodes the queued pictures into free capture buffers.
    fn work(&mut self) {
        let both = self.streaming.get(&Queue::Output) == Some(&true)
            && self.streaming.get(&Queue::Capture) == Some(&true);
        if !both || self.script.never_answer {
            return;
        }
        while !self.queued.entry(Queue::Output).or_default().is_empty() {
            let period = self.control(CID_MPEG_VIDEO_H264_I_PERIOD).unwrap_or(0);
            let idr = self.frames == 0
                || self.force
                || (period > 0 && self.frames.is_multiple_of(period as u64));
            let repeat = self.control(CID_MPEG_VIDEO_REPEAT_SEQ_HEADER) == Some(1);
            let headers = idr && (!self.sent_headers || repeat);
            let mut units: Vec<(Vec<u8>, u32)> = Vec::new();
            let mut unit = Vec::new();
            if headers {
                let sets = [SPS, PPS].concat();
                if self.script.headers_apart && !self.sent_headers {
                    units.push((sets, 0));
                } else {
                    unit.extend_from_slice(&sets);
                }
                self.sent_headers = true;
            }
            let n = self.frames as u8;
            if self.script.skip.contains(&self.frames) {
                unit.clear();
            } else if idr {
                unit.extend_from_slice(&[0, 0, 0, 1, 0x65, 0xb8, 0x00, 0x04, n]);
            } else {
                unit.extend_from_slice(&[0, 0, 0, 1, 0x41, 0x9a, 0x02, n]);
            }
            let mut flags = if idr && !unit.is_empty() {
                BUF_FLAG_KEYFRAME
            } else {
                0
            };
            if self.script.error_flag {
                flags |= BUF_FLAG_ERROR;
            }
            units.push((unit, flags));
            if self.queued.entry(Queue::Capture).or_default().len() < units.len() {
                return; // no room for the stream: wait for buffers
            }
            let (picture, _) = self
                .queued
                .get_mut(&Queue::Output)
                .and_then(|q| q.pop_front())
                .expect("checked non-empty above");
            for (unit, flags) in units {
                let (index, _) = self
                    .queued
                    .get_mut(&Queue::Capture)
                    .and_then(|q| q.pop_front())
                    .expect("room checked above");
                let buffer =
                    &mut self.buffers.get_mut(&Queue::Capture).expect("allocated")[index as usize];
                buffer[..unit.len()].copy_from_slice(&unit);
                self.done
                    .entry(Queue::Capture)
                    .or_default()
                    .push_back(Done {
                        index,
                        bytesused: unit.len() as u32,
                        data_offset: 0,
                        flags,
                    });
                self.record().units.push(unit);
            }
            self.done.entry(Queue::Output).or_default().push_back(Done {
                index: picture,
                bytesused: 0,
                data_offset: 0,
                flags: 0,
            });
            self.frames += 1;
            self.force = false;
        }
    }
}

impl M2mDevice for FakeM2m {
    fn querycap(&mut self) -> io::Result<Caps> {
        self.log(Call::QueryCap);
        self.check(Step::QueryCap)?;
        Ok(Caps {
            driver: self.script.driver.clone(),
            card: self.script.card.clone(),
            caps: self.script.caps,
        })
    }

    fn enum_fmt(&mut self, queue: Queue, index: u32) -> io::Result<Option<u32>> {
        self.log(Call::EnumFmt(queue, index));
        let list = match queue {
            Queue::Capture => &self.script.coded_formats,
            Queue::Output => &self.script.raw_formats,
        };
        Ok(list.get(index as usize).copied())
    }

    fn s_fmt(&mut self, queue: Queue, want: PixFormat) -> io::Result<PixFormat> {
        self.log(Call::SFmt(queue, want));
        self.check(Step::SFmt(queue))?;
        let list = match queue {
            Queue::Capture => &self.script.coded_formats,
            Queue::Output => &self.script.raw_formats,
        };
        // Like a driver, it corrects rather than refuses: an unknown format
        // becomes its first.
        let fourcc = if list.contains(&want.fourcc) {
            want.fourcc
        } else {
            list.first().copied().unwrap_or(0)
        };
        let got = match queue {
            Queue::Capture => PixFormat {
                fourcc,
                bytesperline: 0,
                sizeimage: want.sizeimage.max(CAPTURE_MIN),
                ..want
            },
            Queue::Output => {
                let height = want
                    .height
                    .next_multiple_of(self.script.height_align.max(1));
                let stride = want
                    .bytesperline
                    .max(want.width)
                    .next_multiple_of(self.script.stride_align.max(1));
                PixFormat {
                    width: want.width,
                    height,
                    fourcc,
                    bytesperline: stride,
                    sizeimage: stride * height * 3 / 2,
                }
            }
        };
        self.formats.insert(queue, got);
        Ok(got)
    }

    fn s_parm(&mut self, queue: Queue, fps: u32) -> io::Result<()> {
        self.log(Call::SParm(queue, fps));
        Ok(())
    }

    fn s_ctrl(&mut self, id: u32, value: i32) -> io::Result<()> {
        self.log(Call::SCtrl(id, value));
        let refused = self
            .script
            .refuse
            .iter()
            .any(|(r, values)| *r == id && (values.is_empty() || values.contains(&value)));
        if refused {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if id == CID_MPEG_VIDEO_FORCE_KEY_FRAME {
            self.force = true;
        } else {
            self.record().controls.insert(id, value);
        }
        Ok(())
    }

    fn reqbufs(&mut self, queue: Queue, count: u32) -> io::Result<u32> {
        self.log(Call::ReqBufs(queue, count));
        self.check(Step::ReqBufs(queue))?;
        let size = self.formats.get(&queue).map_or(0, |f| f.sizeimage) as usize;
        self.buffers
            .insert(queue, (0..count).map(|_| vec![0; size]).collect());
        self.queued.remove(&queue);
        self.done.remove(&queue);
        Ok(count)
    }

    fn querybuf(&mut self, queue: Queue, index: u32) -> io::Result<BufferInfo> {
        self.log(Call::QueryBuf(queue, index));
        self.check(Step::QueryBuf)?;
        let buffer = self
            .buffers
            .get(&queue)
            .and_then(|b| b.get(index as usize))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(BufferInfo {
            length: buffer.len() as u32,
            offset: (queue as u32) << 24 | index << 16,
        })
    }

    fn mmap(&mut self, queue: Queue, index: u32, _info: BufferInfo) -> io::Result<()> {
        self.log(Call::Mmap(queue, index));
        self.check(Step::Mmap)?;
        self.mapped.insert((queue, index), ());
        Ok(())
    }

    fn buffer(&mut self, queue: Queue, index: u32) -> Option<&mut [u8]> {
        self.mapped.get(&(queue, index))?;
        self.buffers
            .get_mut(&queue)?
            .get_mut(index as usize)
            .map(|b| &mut b[..])
    }

    fn munmap(&mut self, queue: Queue, index: u32) {
        self.log(Call::Munmap(queue, index));
        self.mapped.remove(&(queue, index));
    }

    fn qbuf(
        &mut self,
        queue: Queue,
        index: u32,
        bytesused: u32,
        _timestamp: Duration,
    ) -> io::Result<()> {
        self.log(Call::QBuf(queue, index, bytesused));
        self.check(Step::QBuf(queue))?;
        let buffer = self
            .buffers
            .get(&queue)
            .and_then(|b| b.get(index as usize))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        if queue == Queue::Output {
            let picture = buffer[..(bytesused as usize).min(buffer.len())].to_vec();
            self.record().pictures.push(picture);
        }
        self.queued
            .entry(queue)
            .or_default()
            .push_back((index, bytesused));
        Ok(())
    }

    fn dqbuf(&mut self, queue: Queue) -> io::Result<Option<Done>> {
        let done = self.done.entry(queue).or_default().pop_front();
        self.log(Call::DqBuf(queue, done.map(|d| d.index)));
        self.check(Step::DqBuf(queue))?;
        Ok(done)
    }

    fn streamon(&mut self, queue: Queue) -> io::Result<()> {
        self.log(Call::StreamOn(queue));
        self.check(Step::StreamOn)?;
        self.streaming.insert(queue, true);
        Ok(())
    }

    fn streamoff(&mut self, queue: Queue) -> io::Result<()> {
        self.log(Call::StreamOff(queue));
        self.streaming.insert(queue, false);
        self.queued.remove(&queue);
        self.done.remove(&queue);
        Ok(())
    }

    fn poll(&mut self, _timeout: Duration) -> io::Result<Ready> {
        self.log(Call::Poll);
        self.check(Step::Poll)?;
        self.work();
        Ok(Ready {
            capture: !self.done.entry(Queue::Capture).or_default().is_empty(),
            output: !self.done.entry(Queue::Output).or_default().is_empty(),
            error: false,
        })
    }
}

impl Drop for FakeM2m {
    fn drop(&mut self) {
        self.log(Call::Close);
    }
}

/// The stream buffer size the driver gives at least.
const CAPTURE_MIN: u32 = 64 * 1024;
