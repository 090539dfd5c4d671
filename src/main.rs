//! The `fulcrum` binary: see `fulcrum --help`.

fn main() -> std::process::ExitCode {
    fulcrum::cli::main()
}
