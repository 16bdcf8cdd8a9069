//! The fault matrix's network cut (docs/reliability.md, "Faults"): the
//! doorbell runs in its own network namespace, joined to the test's by a
//! veth pair, and its link goes down mid-call as when its Wi-Fi drops.
//!
//! Alone in its test binary: while the pair exists, every WebRTC peer on
//! this machine gathers a candidate on its address, and a call of another
//! test running at the same time would lose its media when the pair goes
//! down. Cargo runs test binaries one after the other.

mod common;

use common::lab::Launch;
use common::live::LiveViewer;
use common::matrix::*;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// A network namespace holding the doorbell, joined to this one by a veth
/// pair: 10.213.N.1 here, 10.213.N.2 in there. Removed when dropped.
struct Netns {
    name: String,
    inside: String,
    here: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn create() -> Netns {
        need_root("a network namespace");
        let id = std::process::id();
        let name = format!("dbfault{id}");
        let (outside, inside) = (format!("dbh{id}"), format!("dbn{id}"));
        let n = 20 + id % 200;
        let (here, there) = (format!("10.213.{n}.1"), format!("10.213.{n}.2"));
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name: name.clone(),
            inside: inside.clone(),
            here: here.clone(),
        };
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{here}/30"), "dev", &outside]);
        ip(&["link", "set", &outside, "up"]);
        ns.inside(&["addr", "add", &format!("{there}/30"), "dev", &inside]);
        ns.inside(&["link", "set", &inside, "up"]);
        ns.inside(&["link", "set", "lo", "up"]);
        ns
    }

    fn inside(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// The doorbell's link goes down, as when its Wi-Fi drops.
    fn cut(&self) {
        self.inside(&["link", "set", &self.inside, "down"]);
    }

    fn restore(&self) {
        self.inside(&["link", "set", &self.inside, "up"]);
    }

    fn launch(&self) -> Launch {
        Launch {
            prefix: ["ip", "netns", "exec", &self.name]
                .map(String::from)
                .to_vec(),
            env: vec![],
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes both ends of the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The network between viewer and doorbell cut mid-call (the doorbell's
/// link goes down in its own network namespace), restored 2 s after the
/// call ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_between_viewer_and_doorbell_is_cut_mid_call() {
    init_logs();
    let net = Netns::create();
    let cancel = tokio_util::sync::CancellationToken::new();
    let server = doorbell::server::start(
        &format!("{}:0", net.here),
        doorbell::server::ServerSettings {
            viewer_ice_servers: vec![],
            ..Default::default()
        },
        cancel.clone(),
    )
    .await
    .unwrap();
    let url = format!("http://{}", server.addr);
    let wavs = tempfile::tempdir().unwrap();
    let (mut bell, base) = started(&url, wavs.path(), "", &net.launch()).await;
    let pid = bell.pid();

    let room = ring(&mut bell).await;
    let viewer = LiveViewer::join(&url, &room).await;
    bell.until("connected").await;
    viewer.more_frames(10).await;
    bell.clear_log();
    net.cut();
    let cut = Instant::now();
    let (ended, seen) = bell.until("ended").await;
    let to_end = cut.elapsed();
    assert_eq!(ended["reason"], "media_lost", "{seen:?}");
    viewer.close().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    net.restore();
    let restored = Instant::now();
    if bell.log().contains("lost the signaling server") {
        bell.wait_log("connected to the signaling server").await;
    }
    let ready = restored.elapsed();
    normal_ring(&mut bell, &url).await;
    let c = no_leak(pid, base, "network cut").await;
    row(
        "network between viewer and doorbell cut mid-call (the doorbell's link down), back 2 s after the call ended",
        &told(&seen),
        &format!(
            "ended {} after the cut (media_timeout 3 s); ringing again {} after the network came back",
            secs(to_end),
            secs(ready)
        ),
        c,
    );
    assert!(bell.stop().success());
    cancel.cancel();
}
