//! `fulcrum ctl` against a running instance, reading the same configuration file: status
//! table, maintenance, enable, weight, and the errors an operator meets.
#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::path::Path;

use admin_common::*;
use common::*;
use fulcrum::ctl::Action;

/// A port nothing listens on right now (the admin address must be written in the file).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration whose admin listens on a fixed free port, with its state in
/// `dir/state`; `ctl` finds both through the file.
fn setup(dir: &Path, servers: &[&TestServer]) -> Setup {
    Setup::new()
        .state_dir(dir.join("state"))
        .admin("bind", format!("127.0.0.1:{}", free_port()))
        .servers(servers)
}

async fn ctl(path: &Path, action: Action) -> Result<String, (u8, String)> {
    fulcrum::ctl::run(path, &action)
        .await
        .map_err(|e| (e.code, e.message))
}

#[tokio::test]
async fn ctl_operates_a_running_fulcrum() {
    let a = TestServer::start("web-01").await;
    let b = TestServer::start("web-02").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.toml");
    let f = setup(dir.path(), &[&a, &b]).start_from(&path).await;

    let out = ctl(&path, Action::Status).await.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("BACKEND  SERVER"), "{out}");
    assert!(lines[1].starts_with("b        web-01  "), "{out}");
    // Aligned: the STATE column starts at the same place on every row.
    let col = lines[0].find("STATE").unwrap();
    assert_eq!(&lines[1][col..col + 2], "up", "{out}");
    assert_eq!(&lines[2][col..col + 2], "up", "{out}");
    assert!(
        out.contains("backend b: round_robin, 2 healthy primaries"),
        "{out}"
    );

    let out = ctl(
        &path,
        Action::Maintenance {
            server: "web-01".into(),
            duration: "30m".into(),
            reason: Some("disk swap".into()),
        },
    )
    .await
    .unwrap();
    assert!(out.contains("b/web-01 is in maintenance until"), "{out}");
    let out = ctl(&path, Action::Status).await.unwrap();
    assert!(
        out.contains("maintenance") && out.contains("disk swap"),
        "{out}"
    );

    let out = ctl(
        &path,
        Action::Enable {
            server: "b/web-01".into(),
        },
    )
    .await
    .unwrap();
    // Back, and ramping up its share (slow start) before it is fully `up`.
    assert!(out.contains("back in rotation (state starting)"), "{out}");

    ctl(
        &path,
        Action::Weight {
            server: "web-02".into(),
            weight: 5,
        },
    )
    .await
    .unwrap();
    let api = Api::new(&f);
    assert_eq!(api.server("b", "web-02").await["weight"], 5);

    // Errors: a value the API refuses, an unknown server, too long a window: exit 1.
    let (code, msg) = ctl(
        &path,
        Action::Weight {
            server: "web-02".into(),
            weight: 0,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("between 1 and 256"), "{msg}");
    let (code, msg) = ctl(
        &path,
        Action::Enable {
            server: "web-09".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        (code, msg.contains("no server named `web-09`")),
        (1, true),
        "{msg}"
    );
    let (code, msg) = ctl(
        &path,
        Action::Maintenance {
            server: "web-01".into(),
            duration: "30d".into(),
            reason: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("max_maintenance"), "{msg}");

    // Reload goes to the API (whose answer depends on the reload build).
    let _ = ctl(&path, Action::Reload).await;

    // A token that does not match: exit 2 with a clear message.
    let real = std::fs::read_to_string(dir.path().join("state/admin.token")).unwrap();
    std::fs::write(dir.path().join("state/admin.token"), "wrong\n").unwrap();
    let (code, msg) = ctl(&path, Action::Status).await.unwrap_err();
    assert_eq!(code, 2);
    assert!(msg.contains("refused the token"), "{msg}");
    std::fs::write(dir.path().join("state/admin.token"), real).unwrap();
    f.shutdown().await;
}

#[tokio::test]
async fn ctl_says_when_fulcrum_is_not_running() {
    let a = TestServer::start("web-01").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.toml");
    std::fs::write(&path, setup(dir.path(), &[&a]).toml()).unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/admin.token"), "t\n").unwrap();
    // The real binary, for the exit code and the message an operator sees.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["ctl", "-c"])
        .arg(&path)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fulcrum is not running on 127.0.0.1:"),
        "{err}"
    );
    // A missing configuration file is a usage error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["ctl", "-c", "/nonexistent/fulcrum.toml", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
