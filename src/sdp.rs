//! The little we need to read from SDP ourselves, without a WebRTC stack:
//! which media an offer asks for and in which direction, which codecs an answer
//! chose, and how many candidates a description carries. Pure; used by the peer
//! to decide which tracks to add, and by tests to check what went on the wire.

/// Direction of an m-section, from the offerer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The offerer receives on this section (so we may send).
    pub fn offerer_receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The offerer sends on this section (so we may receive).
    pub fn offerer_sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// `audio`, `video`, `application`.
    pub kind: String,
    /// 0 means the section is rejected.
    pub port: u16,
    pub direction: Direction,
    /// `(payload type, encoding name, clock rate, fmtp)` in the order listed.
    pub codecs: Vec<Codec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: u8,
    pub name: String,
    pub clock_rate: u32,
    pub fmtp: String,
}

/// The m-sections of a description, in order.
pub fn media_sections(sdp: &str) -> Vec<MediaSection> {
    let mut sections: Vec<MediaSection> = Vec::new();
    let mut session_direction = Direction::SendRecv;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_whitespace();
            let kind = parts.next().unwrap_or_default().to_string();
            let port = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let _proto = parts.next();
            let codecs = parts
                .filter_map(|pt| pt.parse().ok())
                .map(|payload_type| Codec {
                    payload_type,
                    name: String::new(),
                    clock_rate: 0,
                    fmtp: String::new(),
                })
                .collect();
            sections.push(MediaSection {
                kind,
                port,
                direction: session_direction,
                codecs,
            });
            continue;
        }
        let direction = match line {
            "a=sendrecv" => Some(Direction::SendRecv),
            "a=sendonly" => Some(Direction::SendOnly),
            "a=recvonly" => Some(Direction::RecvOnly),
            "a=inactive" => Some(Direction::Inactive),
            _ => None,
        };
        match (sections.last_mut(), direction) {
            (None, Some(d)) => session_direction = d,
            (Some(s), Some(d)) => s.direction = d,
            (Some(s), None) => {
                if let Some(rtpmap) = line.strip_prefix("a=rtpmap:") {
                    let (pt, rest) = rtpmap.split_once(' ').unwrap_or((rtpmap, ""));
                    let mut enc = rest.split('/');
                    let name = enc.next().unwrap_or_default().to_string();
                    let rate = enc.next().and_then(|r| r.parse().ok()).unwrap_or(0);
                    if let Some(c) = s
                        .codecs
                        .iter_mut()
                        .find(|c| pt.parse() == Ok(c.payload_type))
                    {
                        c.name = name;
                        c.clock_rate = rate;
                    }
                } else if let Some(fmtp) = line.strip_prefix("a=fmtp:") {
                    let (pt, params) = fmtp.split_once(' ').unwrap_or((fmtp, ""));
                    if let Some(c) = s
                        .codecs
                        .iter_mut()
                        .find(|c| pt.parse() == Ok(c.payload_type))
                    {
                        c.fmtp = params.to_string();
                    }
                }
            }
            (None, None) => {}
        }
    }
    sections
}

/// Number of `a=candidate` lines.
pub fn candidate_count(sdp: &str) -> usize {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .count()
}

/// The description without its candidates, for a trickle protocol: every
/// candidate is sent on its own after it, so none is sent twice.
pub fn without_candidates(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let bare = line.trim_end();
        if !(bare.starts_with("a=candidate:") || bare == "a=end-of-candidates") {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_come_out_and_everything_else_stays() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
                   a=end-of-candidates\r\na=sendrecv\r\n";
        let bare = without_candidates(sdp);
        assert_eq!(
            bare,
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\n"
        );
        assert_eq!(candidate_count(&bare), 0);
    }

    /// Shaped like Chromium's offer from the viewer page: VP8 listed first.
    const CHROMIUM_OFFER: &str = "v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n\
a=candidate:1 1 udp 2113937151 127.0.0.1 50000 typ host\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102 103\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\n\
a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 H264/90000\r\na=fmtp:103 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n";

    #[test]
    fn reads_the_sections_of_a_browser_offer() {
        let s = media_sections(CHROMIUM_OFFER);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].kind.as_str(), s[0].direction),
            ("audio", Direction::SendRecv)
        );
        assert_eq!(
            (s[1].kind.as_str(), s[1].direction),
            ("video", Direction::RecvOnly)
        );
        assert_eq!(s[1].codecs[0].name, "VP8");
        assert_eq!(s[1].codecs[1].name, "H264");
        assert!(s[1].codecs[1].fmtp.contains("packetization-mode=1"));
        assert_eq!(s[0].codecs[0].clock_rate, 48000);
        assert_eq!(candidate_count(CHROMIUM_OFFER), 1);
        assert!(s[1].direction.offerer_receives() && !s[1].direction.offerer_sends());
    }

    #[test]
    fn a_session_level_direction_applies_to_sections_without_their_own() {
        let sdp =
            "v=0\r\na=sendonly\r\nm=audio 9 RTP/AVP 0\r\nm=video 9 RTP/AVP 96\r\na=inactive\r\n";
        let s = media_sections(sdp);
        assert_eq!(s[0].direction, Direction::SendOnly);
        assert_eq!(s[1].direction, Direction::Inactive);
    }

    #[test]
    fn garbage_gives_no_sections_rather_than_a_panic() {
        assert!(media_sections("hello\nm=\na=rtpmap:\na=fmtp:x").len() <= 1);
        assert_eq!(candidate_count(""), 0);
    }
}
