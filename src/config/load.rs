//! Reading a configuration: parse, then validate the whole, in one function that `run`,
//! `check` and reload all share, so they can never disagree about what is valid.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Config;
use super::locate::{KeyPath, Locator};
use super::validate::{ineffective, validate};

/// One problem in a configuration file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place in the file (e.g. it could not be read).
    pub line: usize,
    pub column: usize,
    /// The dotted key, e.g. `backends.booktiful.servers[1].address`; empty when unknown.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found, so an operator fixes a file in one pass instead of one error a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads, parses and validates `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    parse_str(&text, path)
}

/// Parses and validates configuration text; `path` names it in errors and anchors relative paths.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let locator = Locator::new(text);
    let mut config: Config = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let (line, column) = locator.line_col(offset);
            let key = locator
                .key_at(offset)
                .map(|k| k.to_string())
                .unwrap_or_default();
            return Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                key,
                message: e.message().trim().to_string(),
            }]));
        }
    };
    config.source = path.to_path_buf();
    let mut problems = validate(&config);
    problems.extend(ineffective(&config, |key| locator.exact(key).is_some()));
    if problems.is_empty() {
        return Ok(config);
    }
    Err(ConfigErrors(
        problems
            .into_iter()
            .map(|(key, message)| located(&locator, path, key, message))
            .collect(),
    ))
}

fn located(locator: &Locator<'_>, path: &Path, key: KeyPath, message: String) -> ConfigError {
    let (line, column) = locator.find(&key).unwrap_or((0, 0));
    ConfigError {
        file: path.to_path_buf(),
        line,
        column,
        key: key.to_string(),
        message,
    }
}
