//! The registry as this gateway last knew it: the checked sites and
//! gateway records under the fleet's prefix, and the store revision they
//! were read at. Kept whole while the store is unreachable, and what the
//! merge with the file starts from.
//!
//! Invariant: the view holds exactly the valid records under the prefix as
//! of `revision` (a record replaced by an invalid one is gone from it, as
//! the store no longer says what it said), each with the store revision
//! that created its key.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::record::{decode_site, Key, Layout, Member};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// By (site, name).
    pub members: BTreeMap<(String, String), Member>,
    /// A site's prefixes, by name.
    pub sites: BTreeMap<String, Vec<IpNet>>,
    /// The revision that created each key of `members` and `sites`: every
    /// gateway reads the same, so ordering by it settles overlaps the same
    /// way everywhere, and in favour of the record that was there first.
    member_created: BTreeMap<(String, String), i64>,
    site_created: BTreeMap<String, i64>,
    /// The store revision this view is of.
    pub revision: i64,
}

/// One record of the view, as `View::in_creation_order` lists them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Record<'a> {
    Site(&'a String, &'a Vec<IpNet>),
    Gateway(&'a Member),
}

/// What one key's new value did to the view.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub changed: bool,
    /// Why the value was left out (for the log), if it was.
    pub refused: Option<String>,
}

impl View {
    /// Takes the value now stored under `key`, which revision `created`
    /// created.
    pub fn put(&mut self, layout: &Layout, key: &[u8], value: &[u8], created: i64) -> Outcome {
        match layout.parse(key) {
            None => Outcome::default(),
            Some(Key::Site(site)) => {
                let checked = if causeway_config::rules::peer_name(&site).is_err() {
                    Err(format!("site name {site:?} is not a valid name"))
                } else {
                    decode_site(value).map_err(|e| e.to_string())
                };
                match checked {
                    Ok(nets) => {
                        let moved = self.site_created.insert(site.clone(), created) != Some(created);
                        let changed = self.sites.insert(site, nets.clone()).as_ref() != Some(&nets);
                        Outcome { changed: changed || moved, refused: None }
                    }
                    Err(e) => Outcome { changed: self.forget_site(&site), refused: Some(e) },
                }
            }
            Some(Key::Gateway { site, name }) => match Member::decode(&site, &name, value) {
                Ok(m) => {
                    let at = (site, name);
                    let moved = self.member_created.insert(at.clone(), created) != Some(created);
                    let changed = self.members.get(&at) != Some(&m);
                    self.members.insert(at, m);
                    Outcome { changed: changed || moved, refused: None }
                }
                Err(e) => Outcome { changed: self.forget_member(site, name), refused: Some(e.to_string()) },
            },
        }
    }

    /// Forgets `key`; whether the view changed.
    pub fn delete(&mut self, layout: &Layout, key: &[u8]) -> bool {
        match layout.parse(key) {
            None => false,
            Some(Key::Site(site)) => self.forget_site(&site),
            Some(Key::Gateway { site, name }) => self.forget_member(site, name),
        }
    }

    fn forget_site(&mut self, site: &str) -> bool {
        self.site_created.remove(site);
        self.sites.remove(site).is_some()
    }

    fn forget_member(&mut self, site: String, name: String) -> bool {
        let at = (site, name);
        self.member_created.remove(&at);
        self.members.remove(&at).is_some()
    }

    /// Site and gateway records together, the first created first. Keys
    /// one transaction created share a revision: sites come before
    /// gateways then, each kind by name (views built by hand may give
    /// any two records the same revision).
    pub fn in_creation_order(&self) -> Vec<Record<'_>> {
        let sites = self
            .sites
            .iter()
            .map(|(name, nets)| (self.site_created.get(name).copied().unwrap_or(0), 0u8, Record::Site(name, nets)));
        let members = self
            .members
            .iter()
            .map(|(at, m)| (self.member_created.get(at).copied().unwrap_or(0), 1u8, Record::Gateway(m)));
        let mut all: Vec<_> = sites.chain(members).collect();
        // Stable, so equals keep the maps' order, which is by name.
        all.sort_by_key(|(created, kind, _)| (*created, *kind));
        all.into_iter().map(|(_, _, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUB_B: &str = "429kEP7A6Eoqwhuq9S1svBRBfglokdMLy0ksTS3R2S8=";

    #[test]
    fn puts_and_deletes_by_difference() {
        let l = Layout::new("/causeway");
        let mut v = View::default();
        let rec = format!(
            r#"{{"site":"west","name":"gw1","public_key":"{PUB_B}","endpoints":[],"tunnel_address":null,"version":"0.1.0"}}"#
        );
        assert_eq!(
            v.put(&l, b"/causeway/gateways/west/gw1", rec.as_bytes(), 5),
            Outcome { changed: true, refused: None }
        );
        assert!(!v.put(&l, b"/causeway/gateways/west/gw1", rec.as_bytes(), 5).changed, "the same record again");
        assert!(v.put(&l, b"/causeway/sites/west", br#"{"prefixes":["10.2.0.0/16"]}"#, 6).changed);
        assert!(!v.put(&l, b"/causeway/sites/west", br#"{"prefixes":["10.2.0.0/16"]}"#, 6).changed);
        assert!(!v.put(&l, b"/causeway/unknown/x", b"whatever", 7).changed, "keys of other versions are left alone");
        let o = v.put(&l, b"/causeway/gateways/west/gw1", b"garbage", 5);
        assert!(o.changed && o.refused.is_some() && v.members.is_empty(), "an invalid record replaces the valid one");
        let o = v.put(&l, b"/causeway/sites/a%20b", br#"{"prefixes":[]}"#, 8);
        assert!(!o.changed && o.refused.unwrap().contains("not a valid name"));
        assert!(v.delete(&l, b"/causeway/sites/west"));
        assert!(!v.delete(&l, b"/causeway/sites/west"));
        assert_eq!(v, View::default());
    }

    #[test]
    fn records_come_in_the_order_their_keys_were_created() {
        let names = |v: &View| -> Vec<String> {
            v.in_creation_order()
                .iter()
                .map(|r| match r {
                    Record::Site(name, _) => format!("site {name}"),
                    Record::Gateway(m) => format!("gateway {}", m.name),
                })
                .collect()
        };
        let l = Layout::new("/causeway");
        let mut v = View::default();
        let rec = |site: &str, name: &str| {
            format!(
                r#"{{"site":"{site}","name":"{name}","public_key":"{PUB_B}","endpoints":[],"tunnel_address":null,"version":"0.1.0"}}"#
            )
        };
        let site = br#"{"prefixes":["10.2.0.0/16"]}"#;
        v.put(&l, b"/causeway/sites/a", site, 30);
        v.put(&l, b"/causeway/sites/z", site, 10);
        v.put(&l, b"/causeway/sites/m", site, 20);
        assert_eq!(names(&v), ["site z", "site m", "site a"]);
        v.put(&l, b"/causeway/gateways/west/a", rec("west", "a").as_bytes(), 40);
        v.put(&l, b"/causeway/gateways/east/b", rec("east", "b").as_bytes(), 11);
        assert_eq!(names(&v), ["site z", "gateway b", "site m", "site a", "gateway a"]);
        // Deleted and written again: created anew, so now the last.
        assert!(v.delete(&l, b"/causeway/sites/z"));
        assert!(v.put(&l, b"/causeway/sites/z", site, 50).changed);
        assert_eq!(names(&v), ["gateway b", "site m", "site a", "gateway a", "site z"]);
        // One transaction's keys share a revision: sites first, then by name.
        v.put(&l, b"/causeway/gateways/east/c", rec("east", "c").as_bytes(), 70);
        v.put(&l, b"/causeway/sites/y", site, 70);
        v.put(&l, b"/causeway/sites/b", site, 70);
        assert_eq!(names(&v)[5..], ["site b", "site y", "gateway c"]);
        // A record that was created again while the view missed the delete
        // (a watch restarted past it) changes the order, so it counts as a change.
        assert!(v.put(&l, b"/causeway/sites/m", site, 60).changed);
        assert!(!v.put(&l, b"/causeway/sites/m", site, 60).changed);
    }
}
