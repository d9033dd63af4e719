//! Collecting every problem of a configuration, each located by line and
//! field, so one run of validation reports them all.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::locate::line_of;
use crate::Problem;

pub(crate) struct Checker<'a> {
    pub(crate) source: &'a str,
    pub(crate) file: &'a Path,
    /// The file's permission bits when its group or others may read it
    /// (None for text that came from no file, or a private one).
    pub(crate) exposed: Option<u32>,
    pub(crate) problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(crate) fn report(&mut self, span: Range<usize>, field: impl Into<String>, message: impl std::fmt::Display) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line: line_of(self.source, span.start),
            field: field.into(),
            message: message.to_string(),
        });
    }

    /// A key file path, relative ones taken from the configuration's directory.
    pub(crate) fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}
