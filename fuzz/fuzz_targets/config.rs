//! A config file, as `doorbell run --config FILE` and `doorbell check` read
//! and validate it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = doorbell::config::Config::parse(text, std::path::Path::new("fuzz.toml"))
        {
            let _ = format!("{config:?}");
        }
    }
});
