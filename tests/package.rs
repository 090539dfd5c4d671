//! The Debian package that `scripts/package` builds (`scripts/test` runs it before the tests):
//! its files, its conffile and maintainer scripts, a man page that renders, a systemd unit
//! that `systemd-analyze verify` accepts, and completion scripts that match the binary's
//! `fulcrum completions`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_fulcrum");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The unit as installed.
const UNIT: &str = "usr/lib/systemd/system/fulcrum.service";

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (scripts/test installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: Output) -> String {
    String::from_utf8(out.stdout).unwrap()
}

/// `target/debian/fulcrum_VERSION_ARCH.deb`, next to the binary under test.
fn deb() -> PathBuf {
    let target = Path::new(BIN).parent().unwrap().parent().unwrap();
    let arch = text(run(Command::new("dpkg").arg("--print-architecture")));
    let deb = target
        .join("debian")
        .join(format!("fulcrum_{VERSION}_{}.deb", arch.trim()));
    assert!(
        deb.is_file(),
        "{} is missing: run scripts/package first (scripts/test does)",
        deb.display()
    );
    deb
}

/// The package unpacked once: its files under `root/`, its control files under `control/`.
fn unpacked() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let deb = deb();
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.path().join("root")));
        run(Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(dir.path().join("control")));
        dir
    })
    .path()
}

fn root() -> PathBuf {
    unpacked().join("root")
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_package_holds_every_file() {
    let listing = text(run(Command::new("dpkg-deb").arg("-c").arg(deb())));
    let entry = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
            .to_string()
    };
    assert!(entry("usr/bin/fulcrum").starts_with("-rwxr-xr-x 0/0"));
    assert!(entry("etc/fulcrum/fulcrum.toml").starts_with("-rw-r--r-- 0/0"));
    for path in [
        UNIT,
        "usr/share/man/man1/fulcrum.1.gz",
        "usr/share/man/man1/fulcrum-run.1.gz",
        "usr/share/man/man1/fulcrum-ctl.1.gz",
        "usr/share/man/man1/fulcrum-completions.1.gz",
        "usr/share/bash-completion/completions/fulcrum",
        "usr/share/zsh/vendor-completions/_fulcrum",
        "usr/share/fish/vendor_completions.d/fulcrum.fish",
        "usr/share/doc/fulcrum/README.md",
        "usr/share/doc/fulcrum/LICENSE-MIT",
        "usr/share/doc/fulcrum/LICENSE-APACHE",
        "usr/share/doc/fulcrum/copyright",
    ] {
        assert!(entry(path).starts_with("-rw-r--r-- 0/0"), "{path}");
    }
}

#[test]
fn the_packaged_binary_is_this_fulcrum() {
    let out = text(run(
        Command::new(root().join("usr/bin/fulcrum")).arg("--version")
    ));
    assert_eq!(out.trim(), format!("fulcrum {VERSION}"));
    let control = read(unpacked().join("control/control"));
    for line in [
        "Package: fulcrum",
        &format!("Version: {VERSION}"),
        "Section: net",
    ] {
        assert!(
            control.lines().any(|l| l == line),
            "{line} not in:\n{control}"
        );
    }
    let depends = control
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends in:\n{control}"));
    assert!(
        depends.contains("libc6") && depends.contains("procps"),
        "{depends}"
    );
}

#[test]
fn the_configuration_is_a_conffile_that_passes_check() {
    let conffiles = read(unpacked().join("control/conffiles"));
    assert!(
        conffiles.lines().any(|l| l == "/etc/fulcrum/fulcrum.toml"),
        "{conffiles}"
    );
    let config = root().join("etc/fulcrum/fulcrum.toml");
    let summary = text(run(Command::new(BIN).arg("check").arg("-c").arg(&config)));
    assert!(summary.contains(": OK"), "{summary}");
    let example = read(config);
    assert!(
        example.contains("state_dir = \"/var/lib/fulcrum\""),
        "{example}"
    );
}

#[test]
fn the_maintainer_scripts_create_the_user_and_handle_the_unit() {
    let postinst = read(unpacked().join("control/postinst"));
    assert!(postinst.contains("useradd --system"), "{postinst}");
    assert!(postinst.contains("fulcrum.service"), "{postinst}");
    assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
    let postrm = read(unpacked().join("control/postrm"));
    assert!(postrm.contains("/var/lib/fulcrum"), "{postrm}");
    for script in ["postinst", "postrm", "prerm"] {
        let path = unpacked().join("control").join(script);
        if path.exists() {
            run(Command::new("sh").arg("-n").arg(&path));
        }
    }
}

#[test]
fn man_fulcrum_renders() {
    let man = root().join("usr/share/man/man1");
    let page = |name: &str| {
        let out = run(Command::new("man")
            .args(["--warnings", "-P", "cat", "-l"])
            .arg(man.join(name))
            .env("MANWIDTH", "100")
            .env("LANG", "C.UTF-8"));
        let warnings = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(warnings.is_empty(), "{name}: groff warnings:\n{warnings}");
        text(out)
    };
    let main = page("fulcrum.1.gz");
    for words in [
        "NAME",
        "SYNOPSIS",
        "completions",
        "Print a shell completion script",
        "/etc/fulcrum/fulcrum.toml",
        "STATE_DIRECTORY",
        "NOTIFY_SOCKET",
        "SIGHUP",
        "EXIT STATUS",
        VERSION,
    ] {
        assert!(
            main.contains(words),
            "{words:?} not in man fulcrum:\n{main}"
        );
    }
    let ctl = page("fulcrum-ctl.1.gz");
    assert!(ctl.contains("maintenance"), "{ctl}");
}

#[test]
fn the_unit_is_a_hardened_notify_service_that_verifies() {
    let unit = read(root().join(UNIT));
    let has = |line: &str| unit.lines().any(|l| l == line);
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/bin/fulcrum check -c /etc/fulcrum/fulcrum.toml",
        "ExecStart=/usr/bin/fulcrum run -c /etc/fulcrum/fulcrum.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "User=fulcrum",
        "StateDirectory=fulcrum",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "LimitNOFILE=65536",
    ] {
        assert!(has(line), "{line} not in the unit:\n{unit}");
    }
    // systemd-analyze checks the unit against this machine's systemd: a copy whose commands
    // point into the unpacked package, and its man pages on MANPATH for `Documentation=`.
    // It exits 0 even for unknown keys or bad values, so any word from it is a failure.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("fulcrum.service");
    let binary = root().join("usr/bin/fulcrum");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/fulcrum", binary.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("MANPATH", root().join("usr/share/man"))
        .output()
        .expect("systemd-analyze (package systemd; scripts/test installs it)");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}\n{said}",
        out.status
    );
}

#[test]
fn the_completion_scripts_are_the_binarys() {
    let root = root();
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/fulcrum"),
        ("zsh", "usr/share/zsh/vendor-completions/_fulcrum"),
        ("fish", "usr/share/fish/vendor_completions.d/fulcrum.fish"),
    ] {
        let printed = text(run(Command::new(BIN).args(["completions", shell])));
        assert_eq!(
            read(root.join(path)),
            printed,
            "{path} differs from `fulcrum completions {shell}`: rebuild with scripts/package"
        );
    }
    run(Command::new("bash")
        .arg("-n")
        .arg(root.join("usr/share/bash-completion/completions/fulcrum")));
}

#[test]
fn completions_prints_a_script_per_shell() {
    let script = |shell: &str| text(run(Command::new(BIN).args(["completions", shell])));
    assert!(script("bash").contains("complete -F _fulcrum"));
    assert!(script("zsh").starts_with("#compdef fulcrum"));
    assert!(script("fish").contains("complete -c fulcrum"));
    for sub in ["run", "check", "demo", "ctl", "simulate", "completions"] {
        assert!(script("fish").contains(&format!("-a \"{sub}\"")), "{sub}");
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unknown shell is a usage error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}
