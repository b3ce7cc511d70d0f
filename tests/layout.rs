//! The engine must stay pure: no I/O, no clock, no async runtime, no store.
//! One crate cannot make the compiler enforce it, so this cheap test does.

use std::fs;
use std::path::Path;

#[test]
fn engine_is_pure() {
    let banned = [
        "tokio",
        "sled",
        "axum",
        "hyper",
        "std::net",
        "std::fs",
        "std::io",
        "SystemTime::now",
        "Instant::now",
        "std::env",
        "std::thread",
        "tracing::",
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for b in banned {
                assert!(
                    !code.contains(b),
                    "{}:{}: the engine must not use {b}: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 6, "found only {checked} engine files");
}
