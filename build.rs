//! Builds the few lines of C that route ALSA's error messages into our log
//! (src/media/alsa_log.c; only with the `audio` feature, which links ALSA).

fn main() {
    println!("cargo:rerun-if-changed=src/media/alsa_log.c");
    if std::env::var_os("CARGO_FEATURE_AUDIO").is_some() {
        cc::Build::new()
            .file("src/media/alsa_log.c")
            .warnings(true)
            .compile("doorbell_alsa_log");
    }
}
