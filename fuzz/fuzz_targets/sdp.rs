//! A viewer's SDP offer, as the doorbell reads it before answering: the
//! media sections, codecs, directions and candidates, and the answer plan
//! it makes from them (what to send and receive, with the notes it logs).
#![no_main]

use doorbell::peer::MediaPlan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&inputs, rest)) = data.split_first() else {
        return;
    };
    if let Ok(sdp) = std::str::from_utf8(rest) {
        let sections = doorbell::sdp::media_sections(sdp);
        for s in &sections {
            let _ = (s.direction.offerer_sends(), s.direction.offerer_receives());
        }
        let _ = doorbell::sdp::candidate_count(sdp);
        let (plan, notes) = MediaPlan::from_offer(sdp, inputs & 1 != 0, inputs & 2 != 0);
        // We never plan to send what we do not have.
        assert!(!plan.send_video || inputs & 1 != 0, "{plan:?}");
        assert!(!plan.send_audio || inputs & 2 != 0, "{plan:?}");
        let _ = notes.join("; ");
    }
});
