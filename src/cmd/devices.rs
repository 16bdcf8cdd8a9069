//! `doorbell devices`: what this machine has, with the names to put in the
//! config. Cameras (V4L2) with their formats, sizes and rates; the hardware
//! H.264 encoder; sound inputs
//! and outputs (ALSA, which also reaches PulseAudio/PipeWire through their
//! plugins); GPIO. Says plainly when something is absent rather than printing
//! an empty list.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    let text = tokio::task::spawn_blocking(report).await?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn report() -> String {
    let mut out = String::new();
    cameras(&mut out);
    camera_module(&mut out);
    encoders(&mut out);
    audio(&mut out);
    gpio(&mut out);
    out
}

#[cfg(feature = "camera")]
fn cameras(out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(out, "Cameras (video.source = \"v4l2:PATH\"):");
    let cams = crate::media::v4l2::list_cameras();
    if cams.is_empty() {
        let _ = writeln!(
            out,
            "  none: no V4L2 capture device (/dev/video*) on this machine"
        );
    }
    for c in cams {
        let _ = writeln!(out, "  {c}");
    }
    out.push('\n');
}

/// The Raspberry Pi camera module: whether the program that reads it is
/// here (the cameras themselves it lists with `--list-cameras`).
fn camera_module(out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(out, "Camera module (video.source = \"libcamera\"):");
    match crate::media::libcamera::resolve("auto") {
        Ok(program) => {
            let _ = writeln!(
                out,
                "  {} is installed; `{} --list-cameras` lists the cameras (libcamera:N)",
                program.display(),
                program
                    .file_name()
                    .map_or("rpicam-vid".into(), |n| n.to_string_lossy())
                    .replace("-vid", "-hello"),
            );
        }
        Err(e) => {
            let _ = writeln!(out, "  none: {e}");
        }
    }
    out.push('\n');
}

/// V4L2 memory-to-memory H.264 encoders (`/dev/video11` on a Pi 4 and
/// earlier): what `video.encoder = "v4l2m2m"` can use.
fn encoders(out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(out, "Hardware H.264 encoder (video.encoder = \"v4l2m2m\"):");
    let found = crate::media::v4l2m2m::list_encoders();
    if found.is_empty() {
        let _ = writeln!(
            out,
            "  none: no V4L2 memory-to-memory H.264 encoder (/dev/video*) on this machine; \
             OpenH264 (software) will be used"
        );
    }
    for (path, e) in found {
        let _ = writeln!(out, "  {:<24} {} ({})", path.display(), e.driver, e.card);
    }
    out.push('\n');
}

#[cfg(not(feature = "camera"))]
fn cameras(out: &mut String) {
    out.push_str("Cameras: this build has no camera support (cargo feature `camera`)\n\n");
}

#[cfg(feature = "audio")]
fn audio(out: &mut String) {
    use std::fmt::Write;
    for (input, title, key) in [
        (true, "Microphones", "audio.microphone"),
        (false, "Speakers", "audio.speaker"),
    ] {
        let _ = writeln!(out, "{title} ({key} = \"default\" or \"device:NAME\"):");
        match crate::media::device::list(input) {
            Err(e) => {
                let _ = writeln!(out, "  cannot list them: {e}");
            }
            Ok(list) => {
                let usable: Vec<_> = list.iter().filter(|d| d.format.is_ok()).collect();
                if usable.is_empty() {
                    let _ = writeln!(out, "  none usable: no sound card (or server) answers");
                }
                for d in usable {
                    let (rate, channels) = d.format.clone().unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  {:<24} {rate} Hz, {channels} ch{}{}",
                        d.name,
                        if d.is_default { ", the default" } else { "" },
                        if d.description.is_empty() || d.description == d.name {
                            String::new()
                        } else {
                            format!("  ({})", d.description)
                        }
                    );
                }
            }
        }
        out.push('\n');
    }
}

#[cfg(not(feature = "audio"))]
fn audio(out: &mut String) {
    out.push_str("Sound: this build has no sound card support (cargo feature `audio`)\n\n");
}

fn gpio(out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "GPIO (button.sources = [\"gpio:PIN\"], chime.relay = \"gpio:PIN\"):"
    );
    match crate::gpio::describe() {
        Ok(s) => {
            let _ = writeln!(out, "  {s}");
        }
        Err(e) => {
            let _ = writeln!(out, "  not available: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_report_names_every_section_even_without_hardware() {
        let r = super::report();
        for section in ["Cameras", "Camera module", "Hardware H.264 encoder", "GPIO"] {
            assert!(r.contains(section), "{r}");
        }
        #[cfg(feature = "audio")]
        assert!(r.contains("Microphones") && r.contains("Speakers"), "{r}");
    }
}
