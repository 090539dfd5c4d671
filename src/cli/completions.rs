//! `fulcrum completions SHELL`: prints a completion script for bash, zsh or fish, generated
//! from the same clap definitions that parse the command line, so it never drifts from them.
//! The Debian package installs the three scripts where each shell looks for them.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

/// The shells a completion script can be printed for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    /// Every shell, for generating all scripts at once (the package).
    pub const ALL: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

    /// The file name each shell's completion loader looks for.
    pub fn file_name(self) -> &'static str {
        match self {
            Shell::Bash => "fulcrum",
            Shell::Zsh => "_fulcrum",
            Shell::Fish => "fulcrum.fish",
        }
    }
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(generator, &mut super::Cli::command(), "fulcrum", &mut out);
    out
}

/// Prints the script; exit 2 if standard output cannot take it.
pub fn main(shell: Shell) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(&script(shell))
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write the completion script: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_script_completes_the_subcommands() {
        for shell in Shell::ALL {
            let text = String::from_utf8(script(shell)).unwrap();
            for sub in ["run", "check", "demo", "ctl", "simulate", "completions"] {
                assert!(text.contains(sub), "{shell:?} lacks {sub}");
            }
        }
    }
}
