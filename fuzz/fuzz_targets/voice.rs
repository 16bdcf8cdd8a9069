//! A voice message as the owner's phone (or anyone) sends it: any bytes
//! through the Ogg demuxer and libopus (src/media/ogg_opus.rs), with the
//! length limit the door uses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    if let Ok(pcm) = doorbell::media::ogg_opus::decode(data, Duration::from_secs(30)) {
        assert!(pcm.len() <= 30 * 48_000 + 48_000, "{} samples", pcm.len());
    }
});
