//! Writes what the Debian package installs besides the binary and the files kept in
//! `packaging/`: the man pages, generated from the clap definitions (`fulcrum.1` with the
//! files, environment, signals and exit codes of a service; one page per subcommand), and
//! the completion scripts of `fulcrum completions`. `scripts/package` runs it:
//!
//! ```sh
//! cargo run --example package-assets -- target/package-assets
//! ```
//! which writes `man/*.1` and `completions/{fulcrum,_fulcrum,fulcrum.fish}` there.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use fulcrum::cli::completions::Shell;

/// The sections of `fulcrum.1` that clap does not know: how fulcrum runs as a service.
const SERVICE_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/fulcrum/fulcrum.toml\fR
The configuration the systemd unit runs with (a commented example at first).
Check an edit with \fBfulcrum check \-c /etc/fulcrum/fulcrum.toml\fR.
.TP
\fI/var/lib/fulcrum/\fR
\fIstate_dir\fR: saved maintenance windows (\fImaintenance.json\fR) and the generated admin
token (\fIadmin.token\fR, mode 0600), read by \fBfulcrum ctl\fR.
.TP
\fI/usr/lib/systemd/system/fulcrum.service\fR
The unit: \fBsystemctl enable \-\-now fulcrum\fR, \fBsystemctl reload fulcrum\fR.
Logs go to the journal: \fBjournalctl \-u fulcrum\fR.
.SH ENVIRONMENT
.TP
\fBRUST_LOG\fR
Log filter, \fIinfo\fR by default (e.g. \fIdebug\fR, \fIinfo,fulcrum::access=off\fR).
.TP
\fBSTATE_DIRECTORY\fR
Set by systemd for \fIStateDirectory=\fR: the default of \fIstate_dir\fR (else \fI.fulcrum\fR).
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR, \fBWATCHDOG_PID\fR
Set by systemd for \fIType=notify\fR and \fIWatchdogSec=\fR: \fBfulcrum run\fR sends READY=1
once every listener is bound and every server has been checked once, RELOADING=1 and READY=1
around a reload, STOPPING=1 at shutdown, a STATUS= line such as "2/2 primaries healthy", and
WATCHDOG=1 at half the watchdog interval. Without NOTIFY_SOCKET none of this happens.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Reload the configuration file; an invalid file is refused and the old configuration serves on.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting, let in-flight requests finish for \fIgrace_period\fR, exit 0.
.SH "EXIT STATUS"
0 success; 1 bad usage or bad configuration (with a message naming the file, line, column and
key); 2 a runtime failure.
.SH "SEE ALSO"
\fBfulcrum\-run\fR(1), \fBfulcrum\-check\fR(1), \fBfulcrum\-ctl\fR(1), \fBsystemctl\fR(1),
\fBjournalctl\fR(1), and \fI/usr/share/doc/fulcrum/README.md\fR for the configuration reference.
"#;

fn main() {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: package-assets OUT_DIR");
        std::process::exit(1);
    };
    if let Err(e) = write_all(&out) {
        eprintln!("package-assets: {}: {e}", out.display());
        std::process::exit(2);
    }
}

fn write_all(out: &Path) -> std::io::Result<()> {
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    let cmd = fulcrum::cli::Cli::command().disable_help_subcommand(true);
    // One page per subcommand (fulcrum-run.1, fulcrum-ctl-status.1, ...), then fulcrum.1
    // again with the service sections.
    clap_mangen::generate_to(cmd.clone(), &man)?;
    let page = clap_mangen::Man::new(cmd).manual("fulcrum manual");
    let mut roff = Vec::new();
    page.render_title(&mut roff)?;
    page.render_name_section(&mut roff)?;
    page.render_synopsis_section(&mut roff)?;
    page.render_description_section(&mut roff)?;
    page.render_options_section(&mut roff)?;
    page.render_subcommands_section(&mut roff)?;
    roff.write_all(SERVICE_SECTIONS.as_bytes())?;
    page.render_version_section(&mut roff)?;
    std::fs::write(man.join("fulcrum.1"), roff)?;

    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in Shell::ALL {
        std::fs::write(
            completions.join(shell.file_name()),
            fulcrum::cli::completions::script(shell),
        )?;
    }
    Ok(())
}
