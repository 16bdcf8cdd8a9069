//! `doorbell check` and `doorbell devices` as a user runs them, on a machine
//! without a Raspberry Pi's GPIO, a camera or a sound card (this one): every
//! configured device gets a line, a missing one a reason and a fix, and the
//! exit status says whether all is well. The signaling server is checked too:
//! our own, started here, or none at all.

use std::process::Command;
use tokio_util::sync::CancellationToken;

/// `doorbell serve`'s server on a loopback port, for as long as the guard lives.
fn signaling_server() -> (String, tokio::runtime::Runtime, CancellationToken) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cancel = CancellationToken::new();
    let server = runtime
        .block_on(doorbell::server::start(
            "127.0.0.1:0",
            doorbell::server::ServerSettings::default(),
            cancel.clone(),
        ))
        .unwrap();
    (format!("http://{}", server.addr), runtime, cancel)
}

fn doorbell(args: &[&str]) -> (bool, String) {
    let (ok, stdout, _) = doorbell_with_stderr(args);
    (ok, stdout)
}

fn doorbell_with_stderr(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_doorbell"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn line<'a>(report: &'a str, what: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(what))
        .unwrap_or_else(|| panic!("no {what} line in:\n{report}"))
}

#[test]
fn check_passes_a_config_of_test_sources() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doorbell.toml");
    let (url, _runtime, _server) = signaling_server();
    std::fs::write(
        &path,
        format!(
            "[signaling]\nurl = \"{url}\"\n[audio]\nmicrophone = \"tone:600\"\nspeaker = \"wav:{}/call.wav\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (ok, report) = doorbell(&["check", "--config", path.to_str().unwrap()]);
    assert!(ok, "check should pass:\n{report}");
    for what in [
        "config",
        "signaling",
        "button",
        "camera",
        "encoder",
        "microphone",
        "speaker",
    ] {
        assert!(!line(&report, what).contains("FAIL"), "{report}");
    }
    if !std::path::Path::new("/dev/video11").exists() {
        assert!(
            line(&report, "encoder").contains("OpenH264 (software): video.encoder = \"auto\""),
            "{report}"
        );
    }
    assert!(
        line(&report, "signaling")
            .contains("Engine.IO 4 / Socket.IO protocol 5 (python-socketio 5.x"),
        "{report}"
    );
    assert!(line(&report, "camera").contains("test pattern"));
    assert!(line(&report, "speaker").contains("WAV files in"));
    assert!(report.contains("all good"));
}

#[test]
fn check_explains_every_missing_device_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doorbell.toml");
    // Nothing listens on port 9 (discard) of this machine.
    std::fs::write(
        &path,
        "[signaling]\nurl = \"http://127.0.0.1:9\"\n\
         [video]\nsource = \"v4l2:/dev/video-doorbell-test-none\"\n\
         [audio]\nmicrophone = \"device:hw:CARD=NoSuchCard,DEV=0\"\n\
         speaker = \"device:hw:CARD=NoSuchCard,DEV=0\"\n\
         [button]\nsources = [\"gpio:17\"]\n",
    )
    .unwrap();
    let (ok, report, stderr) = doorbell_with_stderr(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok, "check must fail without the hardware:\n{report}");
    for what in ["signaling", "button", "camera", "microphone", "speaker"] {
        let l = line(&report, what);
        assert!(l.contains("FAIL"), "{what}: {l}");
    }
    assert!(
        line(&report, "signaling").contains("cannot connect to 127.0.0.1:9"),
        "{report}"
    );
    // Every failure comes with a fix on the next line.
    let lines: Vec<&str> = report.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("FAIL") {
            assert!(
                lines.get(i + 1).is_some_and(|n| n.contains("fix: ")),
                "no fix after {l:?}"
            );
        }
    }
    assert!(
        line(&report, "camera").contains("no such device"),
        "{report}"
    );
    assert!(report.contains("5 problems"), "{report}");
    // ALSA's own error printing goes to our log at debug level, not to the
    // terminal (it used to print a dozen "ALSA lib ..." lines here).
    assert!(!stderr.contains("ALSA lib"), "{stderr}");
}

#[test]
fn check_reports_a_bad_config_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doorbell.toml");
    std::fs::write(&path, "[button]\nsources = [\"gpio:99\"]\n").unwrap();
    let (ok, report) = doorbell(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    let l = line(&report, "config");
    assert!(
        l.contains("FAIL") && l.contains("button.sources"),
        "{report}"
    );
}

#[test]
fn devices_lists_every_kind_and_says_when_there_is_none() {
    let (ok, report) = doorbell(&["devices"]);
    assert!(ok, "{report}");
    assert!(report.contains("Cameras"), "{report}");
    assert!(report.contains("GPIO"), "{report}");
    assert!(report.contains("Hardware H.264 encoder"), "{report}");
    if !std::path::Path::new("/dev/video11").exists() {
        assert!(
            report.contains("OpenH264 (software) will be used"),
            "{report}"
        );
    }
    if !std::path::Path::new("/dev/video0").exists() {
        assert!(report.contains("none: no V4L2 capture device"), "{report}");
    }
    if !std::path::Path::new("/dev/gpiomem").exists() {
        assert!(report.contains("not available"), "{report}");
    }
}
