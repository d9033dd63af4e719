use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// One thing wrong with a configuration, located for the person fixing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// Dotted path of the field, such as `peer[2].allowed_ips`.
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}", self.file.display(), self.line, self.field, self.message)
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    /// The reason is part of the message, not a separate source, so that
    /// an error chain printed whole does not say it twice.
    #[error("{}: cannot read configuration: {reason}", path.display())]
    Read { path: PathBuf, reason: std::io::Error },
    /// Anyone who may write the file may change the gateway's keys and
    /// peers, as sshd's StrictModes reasons.
    #[error("{}: someone other than its owner may write it (mode {mode:03o}), and so change this gateway's keys and peers; `chmod go-w` it", path.display())]
    Writable { path: PathBuf, mode: u32 },
    /// Every problem found, in file order; never empty.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems found (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            ConfigError::Read { .. } | ConfigError::Writable { .. } => &[],
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
