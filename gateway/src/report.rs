//! What a reconciliation changed (`reload.rs`, `sites.rs`,
//! `ipsec/reconcile.rs`): a leaf, so each half of a reload can add to it
//! without importing the others.

/// What a reconciliation changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
    /// Changes that need a restart to take effect (they were not applied).
    pub needs_restart: Vec<String>,
    /// Why the whole change was refused, when it was: then nothing else
    /// here happened.
    pub refused: Option<String>,
}

impl Report {
    /// A change refused whole, for `why`.
    pub fn refused(why: String) -> Report {
        Report { refused: Some(why), ..Report::default() }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(why) = &self.refused {
            return write!(f, "refused, nothing changed: {why}");
        }
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        write!(
            f,
            "added: {}; removed: {}; changed: {}; unchanged: {}",
            list(&self.added),
            list(&self.removed),
            list(&self.changed),
            self.unchanged
        )?;
        if !self.needs_restart.is_empty() {
            write!(f, "; not applied until restart: {}", self.needs_restart.join(", "))?;
        }
        Ok(())
    }
}
