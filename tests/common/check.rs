//! `fulcrum check` through the built binary, for tests of located configuration errors.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fulcrum");

/// Runs `fulcrum check -c PATH`: (exit code, stdout, stderr).
pub fn check_file(path: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["check", "-c", path.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .output()
        .expect("the fulcrum binary runs");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` as `DIR/bad.toml` and expects exit 1 with an error line
/// `FILE:LINE:COL: ... `KEY` ...` containing `words`.
pub fn expect_error(dir: &Path, text: &str, line: usize, key: &str, words: &str) {
    let p = dir.join("bad.toml");
    std::fs::write(&p, text).unwrap();
    let (code, stdout, stderr) = check_file(&p);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    let prefix = format!("{}:{line}:", p.display());
    let l = stderr
        .lines()
        .find(|l| l.starts_with(&prefix) && l.contains(&format!("`{key}`")))
        .unwrap_or_else(|| panic!("no error at {prefix} for {key} in:\n{stderr}\n{text}"));
    assert!(l.contains(words), "{words:?} not in: {l}");
}
