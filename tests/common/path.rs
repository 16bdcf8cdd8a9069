//! Network paths a test can cut, as a phone's Wi-Fi is cut when its owner
//! walks out of range: nothing is closed, no FIN, no ICMP, just silence in
//! both directions. A TCP proxy carries signaling; a 1:1 UDP relay carries
//! the media (each side is shown the relay's address in the other's SDP, as
//! a NAT would show it). `cut()` makes both drop everything from then on
//! while their sockets stay open.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// A TCP proxy to `to` that forwards until cut.
pub struct TcpPath {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl TcpPath {
    pub async fn start(to: SocketAddr) -> TcpPath {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let (c, s) = (cut.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => return },
                    _ = s.cancelled() => return,
                };
                let Ok(server) = TcpStream::connect(to).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, c.clone(), s.clone()));
                tokio::spawn(pump(sr, cw, c.clone(), s.clone()));
            }
        });
        TcpPath { addr, cut, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpPath {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Copies until the path is cut; after that, reads and drops (the sockets
/// stay open: the other end sees silence, not a close).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = stop.cancelled() => return,
        };
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if !cut.load(Ordering::SeqCst) {
        let _ = to.shutdown().await;
    } else {
        // Hold the write half open until the test ends.
        stop.cancelled().await;
    }
}

/// A 1:1 UDP relay between a viewer and the doorbell: the doorbell sends to
/// `toward_doorbell` (the viewer's address in the offer it gets), the viewer
/// sends to `toward_viewer` (the doorbell's address in the answer it gets).
pub struct UdpPath {
    toward_doorbell: Arc<UdpSocket>,
    toward_viewer: Arc<UdpSocket>,
    viewer: Arc<Mutex<Option<SocketAddr>>>,
    doorbell: Arc<Mutex<Option<SocketAddr>>>,
    cut: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl UdpPath {
    pub async fn start() -> UdpPath {
        let path = UdpPath {
            toward_doorbell: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            toward_viewer: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            viewer: Arc::default(),
            doorbell: Arc::default(),
            cut: Arc::default(),
            stop: CancellationToken::new(),
        };
        for (from, to, dest) in [
            (&path.toward_doorbell, &path.toward_viewer, &path.viewer),
            (&path.toward_viewer, &path.toward_doorbell, &path.doorbell),
        ] {
            let (from, to, dest) = (from.clone(), to.clone(), dest.clone());
            let (cut, stop) = (path.cut.clone(), path.stop.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                loop {
                    let n = tokio::select! {
                        r = from.recv_from(&mut buf) => match r { Ok((n, _)) => n, Err(_) => continue },
                        _ = stop.cancelled() => return,
                    };
                    let dest = *dest.lock().unwrap();
                    if let (false, Some(d)) = (cut.load(Ordering::SeqCst), dest) {
                        let _ = to.send_to(&buf[..n], d).await;
                    }
                }
            });
        }
        path
    }

    /// The viewer's offer as the doorbell must see it: one candidate, the
    /// relay's. Remembers where the viewer really is.
    pub fn offer_for_doorbell(&self, offer: &str) -> String {
        let at = self.toward_doorbell.local_addr().unwrap();
        let (sdp, real) = through(offer, at);
        *self.viewer.lock().unwrap() = Some(real);
        sdp
    }

    /// The doorbell's answer as the viewer must see it.
    pub fn answer_for_viewer(&self, answer: &str) -> String {
        let at = self.toward_viewer.local_addr().unwrap();
        let (sdp, real) = through(answer, at);
        *self.doorbell.lock().unwrap() = Some(real);
        sdp
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

impl Drop for UdpPath {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `sdp` with its candidates replaced by one at `at`; and the address of the
/// 127.0.0.1 UDP candidate it replaced.
fn through(sdp: &str, at: SocketAddr) -> (String, SocketAddr) {
    let mut real = None;
    let mut out = String::new();
    for line in sdp.split("\r\n").filter(|l| !l.is_empty()) {
        if let Some(c) = line.strip_prefix("a=candidate:") {
            let f: Vec<&str> = c.split(' ').collect();
            // foundation component transport priority address port typ host
            let usable = f.len() >= 8
                && f[1] == "1"
                && f[2].eq_ignore_ascii_case("udp")
                && f[4] == "127.0.0.1"
                && f[7] == "host";
            if usable && real.is_none() {
                real = Some(SocketAddr::new(
                    f[4].parse().unwrap(),
                    f[5].parse().unwrap(),
                ));
                out.push_str(&format!(
                    "a=candidate:{} 1 udp {} {} {} typ host\r\n",
                    f[0],
                    f[3],
                    at.ip(),
                    at.port()
                ));
            }
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    (out, real.expect("a UDP host candidate on 127.0.0.1"))
}
