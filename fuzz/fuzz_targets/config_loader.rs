//! The configuration loader (`fulcrum::config::parse_str`) on arbitrary text: it must never
//! panic, and every error it reports must carry a message and a place inside the text.
//!
//! Validation resolves every server `address`; a host name means a DNS query, which a fuzzer
//! must not send (thousands a second, to whatever resolver the machine has). So an input
//! whose configuration names a server by host name (not an IP literal) is skipped before
//! `parse_str` sees it (see `names_a_host` and README-config.md). A configuration that is
//! accepted is also built into an `App` (no socket, no task), so a value that validation
//! lets through and construction cannot take shows up here too.

#![no_main]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Only valid UTF-8: the loader takes `&str` (`load_file` refuses other bytes before
    // parsing), and a lossy conversion would only test the conversion.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if names_a_host(text) {
        return;
    }
    let path = Path::new("fuzz.toml");
    match fulcrum::config::parse_str(text, path) {
        Ok(config) => {
            let app = runtime().block_on(fulcrum::app::App::build(config));
            // Every address is an IP literal (else the input was skipped), so nothing
            // can fail to resolve.
            if let Err(e) = app {
                panic!("a configuration that validates does not build: {e}");
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an Err without any error");
            for e in &errors.0 {
                check_error(text, e);
            }
            // Rendering every error must not panic either.
            let _ = errors.to_string();
        }
    }
});

/// An error names the file, says something, and points inside the text (line 0, column 0
/// only for a problem without a place, as `ConfigError` documents).
fn check_error(text: &str, e: &fulcrum::config::ConfigError) {
    assert_eq!(e.file, Path::new("fuzz.toml"), "{e:?}");
    assert!(
        !e.message.trim().is_empty(),
        "an error without a message: {e:?}"
    );
    if e.line == 0 {
        assert_eq!(e.column, 0, "a column without a line: {e:?}");
        return;
    }
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        e.line <= lines.len(),
        "line past the end of the text: {e:?}"
    );
    let width = lines[e.line - 1].chars().count();
    assert!(
        (1..=width + 1).contains(&e.column),
        "column {} outside line {} ({width} characters): {e:?}",
        e.column,
        e.line
    );
}

/// Whether the configuration in `text` names a server by host name, which validation would
/// look up in DNS. It reads the text as TOML the way the loader does (same `toml` crate):
/// text that does not parse never reaches validation, so it is not skipped; one that does is
/// skipped when any `backends.*.servers[*].address` is a string that is not an IP literal
/// and has a `:` (without one, `resolve` answers "needs a port" without a lookup).
fn names_a_host(text: &str) -> bool {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return false;
    };
    let Some(backends) = doc.get("backends").and_then(|b| b.as_table()) else {
        return false;
    };
    backends
        .values()
        .filter_map(|b| b.get("servers")?.as_array())
        .flatten()
        .filter_map(|s| s.get("address")?.as_str())
        .any(|a| a.parse::<SocketAddr>().is_err() && a.contains(':'))
}

/// One current-thread runtime for the process: `App::build` is async (it would resolve
/// names on the blocking pool; here every address is a literal).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}
