//! Collecting every problem of a configuration, each located by line and
//! field, so one run of validation reports them all.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::Spanned;

use crate::locate::line_of;
use crate::Problem;

pub(crate) struct Checker<'a> {
    pub(crate) source: &'a str,
    pub(crate) file: &'a Path,
    /// The file's permission bits when its group or others may read it
    /// (None for text that came from no file, or a private one).
    pub(crate) exposed: Option<u32>,
    /// Who may own the key files it names besides root and this process's
    /// user (`key::check_owner`).
    pub(crate) owners: crate::key::Owners,
    /// Whether `interface.user` must exist on this host: only for a file
    /// about to be started (`load_to_start`). A reload takes no new user
    /// (it is set once at start), and text may be checked anywhere.
    pub(crate) lookup_user: bool,
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

    /// The prefixes of a list field, each parsed by `parse`; one that does
    /// not parse, or names a network listed before in the same field (as
    /// written or once parsed: 10.1.2.3 and 10.1.2.3/32), is reported where
    /// it stands. A repeat is harmless to routing but is most often a line
    /// copied and not edited, so the prefix meant is missing.
    pub(crate) fn prefixes<E: std::fmt::Display>(
        &mut self,
        field: &str,
        items: &[Spanned<String>],
        parse: impl Fn(&str) -> Result<IpNet, E>,
    ) -> Vec<IpNet> {
        let mut first_at: HashMap<IpNet, usize> = HashMap::with_capacity(items.len());
        let mut nets = Vec::with_capacity(items.len());
        for item in items {
            match parse(item.get_ref()) {
                Err(e) => self.report(item.span(), field, e),
                Ok(net) => match first_at.get(&net) {
                    Some(&at) => {
                        let line = line_of(self.source, at);
                        self.report(item.span(), field, format!("{net} is listed twice (first on line {line})"));
                    }
                    None => {
                        first_at.insert(net, item.span().start);
                        nets.push(net);
                    }
                },
            }
        }
        nets
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
