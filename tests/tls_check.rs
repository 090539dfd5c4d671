//! `fulcrum check` on the new frontend keys: `tls = { certs = [...] }`, TLS in TCP mode and
//! `accept_proxy_protocol`. Bad tables and files give the file, line, column and key; a good
//! file lists each certificate's names and expiry.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[path = "common/check.rs"]
mod check;
use check::{check_file, expect_error};

/// Writes a certificate for `names` as `NAME.pem` / `NAME.key` in `dir`.
fn cert(dir: &Path, name: &str, names: &[&str], not_after: SystemTime) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_after = not_after.into();
    let c = params.self_signed(&key).unwrap();
    let (cp, kp) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cp, c.pem()).unwrap();
    std::fs::write(&kp, key.serialize_pem()).unwrap();
    (cp, kp)
}

/// A configuration whose only frontend has `frontend_extra` lines (line 5 on).
fn config(frontend_extra: &str) -> String {
    format!(
        "[[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:8443\"\nbackend = \"shop\"\n{frontend_extra}\n\
         [backends.shop]\n[[backends.shop.servers]]\nname = \"a\"\naddress = \"127.0.0.1:9001\"\n"
    )
}

#[test]
fn good_file_lists_each_certificate_with_names_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let in_90 = SystemTime::now() + Duration::from_secs(90 * 86_400);
    cert(dir.path(), "a", &["a.test", "*.a.test"], in_90);
    cert(dir.path(), "b", &["b.test"], in_90);
    let text = config(
        "tls = { certs = [ { cert = \"a.pem\", key = \"a.key\" }, { cert = \"b.pem\", key = \"b.key\" } ] }\n\
         accept_proxy_protocol = true",
    );
    let p = dir.path().join("good.toml");
    std::fs::write(&p, text).unwrap();
    let (code, stdout, stderr) = check_file(&p);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let want = humantime::format_rfc3339_seconds(in_90).to_string();
    let a = stdout
        .lines()
        .find(|l| l.contains("a.pem"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        a.contains("a.test,*.a.test") && a.contains(&want[..10]),
        "{a}"
    );
    assert!(stdout.contains("b.test"), "{stdout}");
}

#[test]
fn tcp_mode_accepts_tls_and_the_header_timeout_with_proxy_protocol() {
    let dir = tempfile::tempdir().unwrap();
    cert(
        dir.path(),
        "a",
        &["a.test"],
        SystemTime::now() + Duration::from_secs(86_400 * 90),
    );
    let text = config(
        "mode = \"tcp\"\ntls = { cert = \"a.pem\", key = \"a.key\" }\naccept_proxy_protocol = true\nclient_header_timeout = \"2s\"",
    );
    let p = dir.path().join("tcp.toml");
    std::fs::write(&p, text).unwrap();
    let (code, stdout, stderr) = check_file(&p);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn bad_tls_tables_and_files_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let later = SystemTime::now() + Duration::from_secs(86_400 * 90);
    cert(d, "a", &["a.test"], later);
    cert(d, "b", &["b.test"], later);
    expect_error(
        d,
        &config(
            "tls = { cert = \"a.pem\", key = \"a.key\", certs = [ { cert = \"b.pem\", key = \"b.key\" } ] }",
        ),
        5,
        "frontends[0].tls.cert",
        "not both",
    );
    expect_error(
        d,
        &config("tls = { certs = [] }"),
        5,
        "frontends[0].tls.certs",
        "at least one",
    );
    expect_error(
        d,
        &config(
            "tls = { certs = [ { cert = \"a.pem\", key = \"a.key\" }, { cert = \"b.pem\", key = \"a.key\" } ] }",
        ),
        5,
        "frontends[0].tls.certs[1].key",
        "do not match",
    );
    expect_error(
        d,
        &config(
            "[frontends.tls]\ncerts = [\n  { cert = \"a.pem\", key = \"a.key\" },\n  { cert = \"missing.pem\", key = \"b.key\" },\n]",
        ),
        8,
        "frontends[0].tls.certs[1].cert",
        "cannot read",
    );
    std::fs::write(d.join("junk.pem"), "not pem at all").unwrap();
    expect_error(
        d,
        &config("tls = { cert = \"junk.pem\", key = \"a.key\" }"),
        5,
        "frontends[0].tls.cert",
        "no certificate",
    );
    expect_error(
        d,
        &config("tls = { cert = \"a.pem\" }"),
        5,
        "frontends[0].tls.cert",
        "`key` is missing",
    );
    expect_error(
        d,
        &config("accept_proxy_protocol = \"yes\""),
        5,
        "frontends[0].accept_proxy_protocol",
        "bool",
    );
}
