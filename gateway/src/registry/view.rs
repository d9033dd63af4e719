//! The registry as this gateway last knew it: the checked sites and
//! gateway records under the fleet's prefix, and the store revision they
//! were read at. Kept whole while the store is unreachable, and what the
//! merge with the file starts from.
//!
//! Invariant: the view holds exactly the valid records under the prefix as
//! of `revision` (a record replaced by an invalid one is gone from it, as
//! the store no longer says what it said).

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::record::{decode_site, Key, Layout, Member};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// By (site, name).
    pub members: BTreeMap<(String, String), Member>,
    /// A site's prefixes, by name.
    pub sites: BTreeMap<String, Vec<IpNet>>,
    /// The store revision this view is of.
    pub revision: i64,
}

/// What one key's new value did to the view.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub changed: bool,
    /// Why the value was left out (for the log), if it was.
    pub refused: Option<String>,
}

impl View {
    /// Takes the value now stored under `key`.
    pub fn put(&mut self, layout: &Layout, key: &[u8], value: &[u8]) -> Outcome {
        match layout.parse(key) {
            None => Outcome::default(),
            Some(Key::Site(site)) => {
                let checked = if causeway_config::rules::peer_name(&site).is_err() {
                    Err(format!("site name {site:?} is not a valid name"))
                } else {
                    decode_site(value).map_err(|e| e.to_string())
                };
                match checked {
                    Ok(nets) => Outcome {
                        changed: self.sites.insert(site, nets.clone()).as_ref() != Some(&nets),
                        refused: None,
                    },
                    Err(e) => Outcome { changed: self.sites.remove(&site).is_some(), refused: Some(e) },
                }
            }
            Some(Key::Gateway { site, name }) => match Member::decode(&site, &name, value) {
                Ok(m) => {
                    let changed = self.members.get(&(site.clone(), name.clone())) != Some(&m);
                    self.members.insert((site, name), m);
                    Outcome { changed, refused: None }
                }
                Err(e) => {
                    Outcome { changed: self.members.remove(&(site, name)).is_some(), refused: Some(e.to_string()) }
                }
            },
        }
    }

    /// Forgets `key`; whether the view changed.
    pub fn delete(&mut self, layout: &Layout, key: &[u8]) -> bool {
        match layout.parse(key) {
            None => false,
            Some(Key::Site(site)) => self.sites.remove(&site).is_some(),
            Some(Key::Gateway { site, name }) => self.members.remove(&(site, name)).is_some(),
        }
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
        assert_eq!(v.put(&l, b"/causeway/gateways/west/gw1", rec.as_bytes()), Outcome { changed: true, refused: None });
        assert!(!v.put(&l, b"/causeway/gateways/west/gw1", rec.as_bytes()).changed, "the same record again");
        assert!(v.put(&l, b"/causeway/sites/west", br#"{"prefixes":["10.2.0.0/16"]}"#).changed);
        assert!(!v.put(&l, b"/causeway/sites/west", br#"{"prefixes":["10.2.0.0/16"]}"#).changed);
        assert!(!v.put(&l, b"/causeway/unknown/x", b"whatever").changed, "keys of other versions are left alone");
        let o = v.put(&l, b"/causeway/gateways/west/gw1", b"garbage");
        assert!(o.changed && o.refused.is_some() && v.members.is_empty(), "an invalid record replaces the valid one");
        let o = v.put(&l, b"/causeway/sites/a%20b", br#"{"prefixes":[]}"#);
        assert!(!o.changed && o.refused.unwrap().contains("not a valid name"));
        assert!(v.delete(&l, b"/causeway/sites/west"));
        assert!(!v.delete(&l, b"/causeway/sites/west"));
        assert_eq!(v, View::default());
    }
}
