//! WireGuard keys as text: 32 bytes in standard base64 (44 characters with
//! one `=`), exactly what `wg genkey`, `wg pubkey` and `wg genpsk` print.

use std::path::Path;

use base64::Engine;
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "expected a key of 32 bytes in base64 (44 characters ending in '=', as `wg genkey` prints), got {0} characters"
    )]
    Length(usize),
    #[error("expected a key in base64 (A-Z, a-z, 0-9, '+', '/', ending in '='), as `wg genkey` prints")]
    Encoding,
    #[error("cannot read key file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "key file {path} is {} (mode {mode:03o}); a private key must be private: run `chmod 600 {path}`",
        exposure(*.mode)
    )]
    Permissions { path: String, mode: u32 },
    #[error(
        "key file {path} belongs to uid {owner}, who could replace the key: it must belong to root, to the user this runs as (uid {euid}), to the configuration's interface.user, or to the owner of the file that names it{user_note}"
    )]
    Owner { path: String, owner: u32, euid: u32, user_note: String },
}

/// Decodes a base64 key. The text itself is never echoed back in errors,
/// since it may be a private key.
pub fn parse_key(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let text = text.trim();
    if text.len() != 44 {
        return Err(KeyError::Length(text.chars().count()));
    }
    let mut out = Zeroizing::new([0u8; 32]);
    let mut buf = Zeroizing::new([0u8; 33]);
    match base64::engine::general_purpose::STANDARD.decode_slice(text, &mut buf[..]) {
        Ok(32) => {
            out.copy_from_slice(&buf[..32]);
            Ok(out)
        }
        _ => Err(KeyError::Encoding),
    }
}

/// Reads a key from a file that only its owner may read, owned by root, by
/// us or by one of `owners` (`check_owner`).
pub(crate) fn read_key_file(path: &Path, owners: Option<&Owners>) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    parse_key(&read_secret_file(path, owners)?)
}

/// Reads a small secret file (a key, an IKE pre-shared key) that only its
/// owner may read, owned by root, by us or by one of `owners`
/// (`check_owner`); with `owners` None, by anyone: a file named on the
/// command line of a tool run by whoever chose it.
pub fn read_secret_file(path: &Path, owners: Option<&Owners>) -> Result<Zeroizing<String>, KeyError> {
    let shown = path.display().to_string();
    let unreadable = |e: std::io::Error| KeyError::Unreadable { path: shown.clone(), reason: e.to_string() };
    // The file opened is what is checked: checking only the path before
    // opening it would let a file swapped in between be read unchecked.
    let (file, meta) = open_regular(path).map_err(unreadable)?;
    if let Some(mode) = exposed_mode(&meta) {
        return Err(KeyError::Permissions { path: shown, mode });
    }
    if let Some(owners) = owners {
        check_owner(path, &meta, owners)?;
    }
    use std::io::Read;
    // Capacity up front: growing the string would leave copies of the key
    // in freed memory that Zeroizing never sees.
    let mut text = Zeroizing::new(String::with_capacity(MAX_KEY_FILE as usize + 1));
    file.take(MAX_KEY_FILE + 1).read_to_string(&mut text).map_err(unreadable)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::Unreadable { path: shown, reason: format!("longer than {MAX_KEY_FILE} bytes") });
    }
    Ok(text)
}

/// Opens a secret file for reading, with the metadata of the file opened,
/// refusing anything but a regular file: a FIFO, a terminal or a device
/// would block or never end, and a key is 45 bytes. The open does not
/// block (O_NONBLOCK, which changes nothing for a regular file), so a
/// FIFO put in the file's place after any look at the path is refused
/// too, where a plain open would wait for a writer forever.
pub fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok((file, meta))
}

/// How a secret file with `mode` (an `exposed_mode`) is open to others,
/// in words: "readable" only when someone else may read it.
pub fn exposure(mode: u32) -> &'static str {
    if mode & 0o044 != 0 {
        "readable by group or others"
    } else if mode & 0o022 != 0 {
        "writable by group or others"
    } else {
        "open to group or others"
    }
}

/// The permission bits of a file that its group or others may read or
/// write, or None when only its owner may.
pub fn exposed_mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Who may own a secret file besides root and this process's user
/// (`check_owner`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners {
    /// The owner of the file that names it, who decides its keys already.
    pub uids: Vec<u32>,
    /// The user a daemon that drops root switches to (`interface.user`),
    /// which reads the files on reloads. Looked up only for a file trusted
    /// no other way: a lookup through NSS may wait on a directory service.
    pub user: Option<String>,
}

/// Refuses a secret file (`meta` of the file opened) whose owner is
/// neither root, nor us, nor one of `owners`: mode 0600 keeps others from
/// reading a key, not its owner from replacing it, so the owner must be
/// someone who controls the key anyway, as sshd's StrictModes asks of
/// authorized_keys. With the configuration's owner and `interface.user`
/// trusted, a daemon that drops root reads the same files at start, as
/// root, and on reloads, as that user.
pub fn check_owner(path: &Path, meta: &std::fs::Metadata, owners: &Owners) -> Result<(), KeyError> {
    use std::os::unix::fs::MetadataExt;
    let euid = nix::unistd::geteuid().as_raw();
    let owner = meta.uid();
    if owner == 0 || owner == euid || owners.uids.contains(&owner) {
        return Ok(());
    }
    let user_note = match owners.user.as_deref().map(|name| (name, nix::unistd::User::from_name(name))) {
        None => String::new(),
        Some((_, Ok(Some(u)))) if u.uid.as_raw() == owner => return Ok(()),
        Some((_, Ok(Some(_)))) => String::new(),
        Some((name, Ok(None))) => format!(" (interface.user \"{name}\" does not exist)"),
        Some((name, Err(e))) => format!(" (interface.user \"{name}\" could not be looked up: {e})"),
    };
    Err(KeyError::Owner { path: path.display().to_string(), owner, euid, user_note })
}

/// Reads a file that may hold keys (a configuration, a peer file) into
/// memory that is wiped when dropped, with the permission bits that let
/// others read it, if any: a key written inline in such a file is refused
/// where it stands (`Checker::key`).
pub fn read_config_file(path: &Path) -> std::io::Result<(Zeroizing<String>, Option<u32>)> {
    let (text, meta) = read_with_metadata(path)?;
    Ok((text, exposed_mode(&meta)))
}

/// The file's text and the metadata of the file opened (not of the path
/// looked up again, which may name another file by then, or none).
pub(crate) fn read_with_metadata(path: &Path) -> std::io::Result<(Zeroizing<String>, std::fs::Metadata)> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    // Capacity up front, as for key files; a FIFO reports 0 and grows.
    let mut text = Zeroizing::new(String::with_capacity(meta.len() as usize + 1));
    (&file).read_to_string(&mut text)?;
    Ok((text, meta))
}

/// The permission bits of a configuration that let someone other than its
/// owner change it: others' write bit, or the group's unless the group is
/// root's (gid 0, whose members are root's already). Whoever may write it
/// may change the gateway's keys and peers.
pub fn writable_by_others(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = meta.permissions().mode() & 0o777;
    let group_writes = mode & 0o020 != 0 && meta.gid() != 0;
    (mode & 0o002 != 0 || group_writes).then_some(mode)
}

/// The longest key file read: a key, a newline and room for a comment.
const MAX_KEY_FILE: u64 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_wg_keys_and_trims_newlines() {
        let k = parse_key("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").unwrap();
        assert_eq!(k[0], 0xc8);
        assert_eq!(k[31], 0x69);
    }

    #[test]
    fn rejects_wrong_length_and_alphabet() {
        assert_eq!(parse_key("abc").unwrap_err(), KeyError::Length(3));
        assert_eq!(parse_key("yAnz5TF-lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap_err(), KeyError::Encoding);
        assert_eq!(parse_key("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmkA").unwrap_err(), KeyError::Encoding);
    }

    #[test]
    fn key_files_must_be_small_regular_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let private = |name: &str, body: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        let good = private("good.key", b"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n");
        assert_eq!(read_key_file(&good, Some(&Owners::default())).unwrap()[0], 0xc8);
        let big = private("big.key", &[b'A'; 4096]);
        assert!(read_key_file(&big, Some(&Owners::default()))
            .unwrap_err()
            .to_string()
            .contains("longer than 1024 bytes"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = read_key_file(dir.path(), Some(&Owners::default())).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        // A FIFO is refused, without waiting for a writer: the open does
        // not block, so none runs here and the test would hang otherwise.
        let fifo = dir.path().join("gw.fifo");
        assert!(std::process::Command::new("mkfifo").arg("-m600").arg(&fifo).status().unwrap().success());
        let err = read_key_file(&fifo, Some(&Owners::default())).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        // The same through open_regular alone, which the registry's key
        // file is read with: no look at the path comes before the open.
        let err = open_regular(&fifo).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    }

    #[test]
    fn exposure_says_what_others_may_do() {
        assert_eq!(exposure(0o644), "readable by group or others");
        assert_eq!(exposure(0o604), "readable by group or others");
        assert_eq!(exposure(0o620), "writable by group or others");
        assert_eq!(exposure(0o601), "open to group or others");
        let err = KeyError::Permissions { path: "/k".into(), mode: 0o620 };
        assert!(err.to_string().starts_with("key file /k is writable by group or others (mode 620);"), "{err}");
    }

    #[test]
    fn error_text_never_contains_the_key() {
        let almost = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBm_=";
        let msg = parse_key(almost).unwrap_err().to_string();
        assert!(!msg.contains("yAnz5TF"));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.key");
        std::fs::write(&path, "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key_file(&path, None).unwrap_err();
        assert!(matches!(err, KeyError::Permissions { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&path, None).unwrap()[0], 0xc8);
        assert!(matches!(read_key_file(&dir.path().join("missing"), None).unwrap_err(), KeyError::Unreadable { .. }));
    }

    #[test]
    fn key_file_must_belong_to_root_to_us_or_to_a_trusted_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.key");
        std::fs::write(&path, "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&path, Some(&Owners::default())).unwrap()[0], 0xc8, "ours");
        // Giving a file away takes root; CI runs the tests as root.
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: a file of another user cannot be made here");
            return;
        }
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let err = read_key_file(&path, Some(&Owners::default())).unwrap_err();
        assert_eq!(
            err,
            KeyError::Owner { path: path.display().to_string(), owner: 65534, euid: 0, user_note: String::new() }
        );
        assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
        assert_eq!(
            read_key_file(&path, Some(&Owners { uids: vec![7, 65534], user: None })).unwrap()[0],
            0xc8,
            "a trusted owner's"
        );
        assert_eq!(read_key_file(&path, None).unwrap()[0], 0xc8, "no owner check");
        let missing = Owners { uids: Vec::new(), user: Some("causeway-no-such-user".into()) };
        let err = read_key_file(&path, Some(&missing)).unwrap_err().to_string();
        assert!(err.ends_with("(interface.user \"causeway-no-such-user\" does not exist)"), "{err}");
        std::os::unix::fs::chown(&path, Some(0), None).unwrap();
        assert_eq!(read_key_file(&path, Some(&Owners::default())).unwrap()[0], 0xc8, "root's");
    }
}
