//! `fulcrum check` through the built binary: exit codes, the summary, and errors that name
//! the file, line, column and key.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_fulcrum");

fn run(args: &[&str], dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("NO_COLOR", "1");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.output().expect("the fulcrum binary runs")
}

fn check_file(path: &Path) -> (i32, String, String) {
    let out = run(&["check", "-c", path.to_str().unwrap()], None);
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A valid configuration to start from; each bad case changes one thing.
const GOOD: &str = r#"[global]
threads = 2

[[frontends]]
name = "www"
bind = "127.0.0.1:8080"
backend = "shop"

[backends.shop]
algorithm = "round_robin"

[[backends.shop.servers]]
name = "web-01"
address = "127.0.0.1:9001"

[[backends.shop.servers]]
name = "web-02"
address = "127.0.0.1:9002"
backup = true
"#;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Expects exit 1 and an error line `FILE:LINE:COL: key `KEY`: ...` containing `words`.
fn expect_error(text: &str, line: usize, key: &str, words: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "bad.toml", text);
    let (code, stdout, stderr) = check_file(&p);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    let prefix = format!("{}:{line}:", p.display());
    let found = stderr.lines().find(|l| l.starts_with(&prefix));
    let l = found.unwrap_or_else(|| panic!("no error at {prefix} in:\n{stderr}"));
    let col: usize = l[prefix.len()..]
        .split(':')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no column in {l}"));
    assert!(col >= 1, "{l}");
    assert!(
        l.contains(&format!("`{key}`")),
        "key {key} not named in: {l}"
    );
    assert!(l.contains(words), "{words:?} not in: {l}");
    assert!(!stdout.contains(": OK"), "{stdout}");
}

#[test]
fn good_file_passes_with_a_summary() {
    let out = run(
        &["check", "-c", "examples/booktiful.toml"],
        Some(Path::new(env!("CARGO_MANIFEST_DIR"))),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK"), "{stdout}");
    for word in ["booktiful", "web-01", "web-02", "web-03", "backup", "www"] {
        assert!(stdout.contains(word), "summary lacks {word}:\n{stdout}");
    }
    assert!(stdout.lines().count() < 40, "one screen:\n{stdout}");
    // Values as the file spells them.
    assert!(
        stdout.contains("frontend www http on 0.0.0.0:8080"),
        "{stdout}"
    );
    assert!(stdout.contains("least_connections"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "good.toml", GOOD);
    let (code, stdout, stderr) = check_file(&p);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("shop"), "{stdout}");
}

#[test]
fn default_file_is_fulcrum_toml_in_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["check"], Some(dir.path()));
    assert_eq!(out.status.code(), Some(1), "no fulcrum.toml yet");
    assert!(String::from_utf8_lossy(&out.stderr).contains("fulcrum.toml"));
    write(&dir, "fulcrum.toml", GOOD);
    let out = run(&["check"], Some(dir.path()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_key() {
    expect_error(
        &GOOD.replace("threads = 2", "thredz = 2"),
        2,
        "global.thredz",
        "thredz",
    );
}

#[test]
fn unknown_key_in_a_server() {
    expect_error(
        &GOOD.replace(
            "address = \"127.0.0.1:9001\"",
            "address = \"127.0.0.1:9001\"\nwieght = 2",
        ),
        15,
        "backends.shop.servers[0].wieght",
        "wieght",
    );
}

#[test]
fn bad_duration() {
    expect_error(
        &GOOD.replace(
            "algorithm = \"round_robin\"",
            "connect_timeout = \"5 parsecs\"",
        ),
        10,
        "backends.shop.connect_timeout",
        "5 parsecs",
    );
}

#[test]
fn unknown_backend() {
    expect_error(
        &GOOD.replace("backend = \"shop\"", "backend = \"shoop\""),
        7,
        "frontends[0].backend",
        "shoop",
    );
}

#[test]
fn duplicate_server_names() {
    expect_error(
        &GOOD.replace("web-02", "web-01"),
        17,
        "backends.shop.servers[1].name",
        "web-01",
    );
}

#[test]
fn no_non_backup_server() {
    let text = GOOD.replace(
        "address = \"127.0.0.1:9001\"",
        "address = \"127.0.0.1:9001\"\nbackup = true",
    );
    expect_error(&text, 12, "backends.shop.servers", "not a backup");
}

#[test]
fn bad_address() {
    expect_error(
        &GOOD.replace("127.0.0.1:9002", "127.0.0.1"),
        18,
        "backends.shop.servers[1].address",
        "127.0.0.1",
    );
    expect_error(
        &GOOD.replace("127.0.0.1:9002", "127.0.0.1:99999"),
        18,
        "backends.shop.servers[1].address",
        "99999",
    );
}

#[test]
fn bad_bind_address() {
    expect_error(
        &GOOD.replace("127.0.0.1:8080", "localhost"),
        6,
        "frontends[0].bind",
        "localhost",
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = GOOD
        .replace("backend = \"shop\"", "backend = \"shoop\"")
        .replace("web-02", "web-01")
        .replace("127.0.0.1:9002", "nowhere");
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "bad.toml", &text);
    let (code, _, stderr) = check_file(&p);
    assert_eq!(code, 1);
    let located = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{}:", p.display())))
        .count();
    assert_eq!(located, 3, "{stderr}");
}

#[test]
fn not_toml_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "bad.toml", "[global\nthreads = 1\n");
    let (code, _, stderr) = check_file(&p);
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("{}:1:", p.display())), "{stderr}");
}

#[test]
fn missing_file_and_bad_usage_exit_1() {
    let (code, _, stderr) = check_file(Path::new("/nonexistent/fulcrum.toml"));
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/fulcrum.toml"), "{stderr}");
    assert_eq!(run(&["no-such-command"], None).status.code(), Some(1));
    assert_eq!(
        run(&["check", "--no-such-flag"], None).status.code(),
        Some(1)
    );
    assert_eq!(run(&["--help"], None).status.code(), Some(0));
}
