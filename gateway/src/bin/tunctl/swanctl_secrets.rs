//! The IKE secrets of swanctl.conf (`secrets { ike<suffix> { id... secret
//! } }`): which one a connection uses, chosen as strongSwan chooses, and
//! the key file a secret is written to.
//!
//! Invariant: a secret's value is never printed; the key file is created
//! new (never replacing one) with mode 0600.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use super::swanctl::{Section, Setting};
use super::swanctl_values::{self as values, Id};

/// The shortest key causeway_config accepts (its MIN_PSK_LEN).
pub const MIN_PSK_LEN: usize = 16;

/// A secret of the `secrets` section: `ike<suffix> { id... secret }`.
pub struct IkeSecret<'a> {
    pub name: &'a str,
    /// `[Any]` for a secret naming no identity, as strongSwan takes it.
    pub owners: Vec<Id>,
    pub secret: &'a Setting,
}

/// strongSwan's ID_MATCH_PERFECT; %any fits with 1.
const PERFECT: u32 = 20;

/// How well a secret's owners fit one identity, as strongSwan ranks it.
fn fit(owners: &[Id], id: &causeway_config::Identity) -> u32 {
    let one = |o: &Id| match o {
        Id::Any => 1,
        Id::Exact(x) if values::same_identity(x, id) => PERFECT,
        Id::Exact(_) => 0,
    };
    owners.iter().map(one).max().unwrap_or(0)
}

pub fn ike_secrets<'a>(secrets: Option<&'a Section>, notes: &mut Vec<String>) -> Vec<IkeSecret<'a>> {
    let Some(secrets) = secrets else { return Vec::new() };
    let mut out = Vec::new();
    for s in secrets.sections.iter().filter(|s| s.name.starts_with("ike")) {
        let Some(secret) = s.get("secret") else {
            notes.push(format!("{}: secrets.{} has no secret; ignored", s.at, s.name));
            continue;
        };
        let ids: Vec<&Setting> = s.settings.iter().filter(|x| x.key.starts_with("id")).collect();
        let mut owners = Vec::new();
        for id in &ids {
            match values::identity(&id.value) {
                Ok(o) => owners.push(o),
                Err(e) => {
                    notes.push(format!("{}: secrets.{}.{}: {e}; this identity is not matched", id.at, s.name, id.key))
                }
            }
        }
        if ids.is_empty() {
            owners.push(Id::Any);
        }
        out.push(IkeSecret { name: &s.name, owners, secret });
    }
    out
}

/// The secret strongSwan would use between two identities: the best fit
/// to the remote one, then to the local one; the first of equals.
pub fn choose<'s, 'a>(
    secrets: &'s [IkeSecret<'a>],
    local: &causeway_config::Identity,
    remote: &causeway_config::Identity,
) -> Option<&'s IkeSecret<'a>> {
    secrets
        .iter()
        .map(|s| ((fit(&s.owners, remote), fit(&s.owners, local)), s))
        .filter(|((other, me), _)| other + me > 0)
        .fold(None::<((u32, u32), &IkeSecret)>, |best, (rank, s)| match best {
            Some((b, _)) if b >= rank => best,
            _ => Some((rank, s)),
        })
        .map(|(_, s)| s)
}

/// Whether the secret names `id` itself (not only through %any).
pub fn names(secret: &IkeSecret, id: &causeway_config::Identity) -> bool {
    fit(&secret.owners, id) == PERFECT
}

/// A new file holding `bytes` as `0x` and hex, readable by its owner only.
pub fn write_psk(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut text = Zeroizing::new(String::with_capacity(2 + 2 * bytes.len() + 1));
    text.push_str("0x");
    for b in bytes {
        text.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        text.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    text.push('\n');
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    // Whatever the umask took away, the owner must be able to read it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn secrets(text: &str) -> Section {
        super::super::swanctl::parse_text(text, &PathBuf::from("swanctl.conf")).unwrap()
    }

    fn id(t: &str) -> causeway_config::Identity {
        t.parse().unwrap()
    }

    #[test]
    fn the_remote_identity_decides_first_as_in_strongswan() {
        let top = secrets(
            "secrets {\n ike-local { id = gw1.example\n secret = a }\n ike-b { id = b.example\n secret = b }\n \
             ike-any { secret = c }\n ike-both { id-1 = gw1.example\n id-2 = b.example\n secret = d }\n \
             eap-x { id = b.example\n secret = e }\n ike-none { id = x.example }\n}\n",
        );
        let mut notes = Vec::new();
        let all = ike_secrets(top.section("secrets"), &mut notes);
        assert_eq!(notes, ["swanctl.conf:12: secrets.ike-none has no secret; ignored"]);
        let pick =
            |s: &[IkeSecret], local: &str, remote: &str| choose(s, &id(local), &id(remote)).map(|s| s.name.to_string());
        assert_eq!(pick(&all, "gw1.example", "b.example"), Some("ike-both".into()), "both named beats one");
        assert_eq!(pick(&all[..3], "gw1.example", "b.example"), Some("ike-b".into()), "the remote beats the local");
        assert_eq!(
            pick(&all[..3], "gw1.example", "c.example"),
            Some("ike-any".into()),
            "%any beats nothing for the remote"
        );
        assert_eq!(
            pick(&all[..1], "gw1.example", "c.example"),
            Some("ike-local".into()),
            "strongSwan takes a local fit alone"
        );
        assert_eq!(pick(&all[1..2], "gw1.example", "c.example"), None);
        assert!(names(&all[1], &id("B.example")) && !names(&all[2], &id("b.example")));
    }

    #[test]
    fn key_files_are_new_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.psk");
        write_psk(&path, &[0x00, 0xab, 0x10]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0x00ab10\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let e = write_psk(&path, &[1]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0x00ab10\n", "left as it was");
    }
}
