//! The modules of `src/` import only downwards: `scripts/check-layers` finds
//! no import cycle in them, and it does find the one in a crate made to have
//! one (so this test can fail).

use std::process::Command;

fn check(args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check-layers"))
        .args(args)
        .output()
        .expect("python3 runs scripts/check-layers");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_crate_has_no_import_cycle() {
    let (ok, text) = check(&[]);
    assert!(ok, "{text}");
    assert!(text.contains("no import cycle"), "{text}");
}

#[test]
fn a_cycle_is_found_and_named() {
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/layers-cycle/src"
    );
    let (ok, text) = check(&["--root", root]);
    assert!(!ok, "the cycle was not found:\n{text}");
    assert!(
        text.contains("import cycle through 2 modules: config, media"),
        "{text}"
    );
    assert!(
        !text.contains("spec ->"),
        "a test module's import is not an edge:\n{text}"
    );
}
