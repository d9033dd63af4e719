//! The ESP key log, for debugging with Wireshark: with
//! `CAUSEWAY_ESP_KEYLOG=/path` in its environment, causewayd appends each
//! child SA's keys to that file in Wireshark's `esp_sa` table format (the
//! format strongSwan's save-keys plugin writes), so a capture of the
//! tunnel can be decrypted. Off unless asked; the daemon warns at start-up
//! while it is on, and the file is created readable by its owner only.
//! Anyone who reads the file can read the tunnel's traffic.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use causeway_ikev2::{ChildKeys, EspCipher};
use zeroize::Zeroizing;

/// The environment variable that turns the key log on.
pub const ENV: &str = "CAUSEWAY_ESP_KEYLOG";

/// The key log's path, if the operator asked for one (with a warning).
pub fn requested() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(ENV)?);
    tracing::warn!(path = %path.display(), "{ENV} is set: ESP keys are written to this file, for debugging only");
    Some(path)
}

fn hex(bytes: &[u8]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(2 + bytes.len() * 2));
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// One `esp_sa` line: protocol, source, destination, SPI, encryption and
/// its key, integrity and its key. An unknown address is Wireshark's `*`.
fn line(spi: u32, cipher: EspCipher, keymat: &[u8], src: Option<IpAddr>, dst: Option<IpAddr>) -> Zeroizing<String> {
    let family = if src.or(dst).is_some_and(|a| a.is_ipv6()) { "IPv6" } else { "IPv4" };
    let addr = |a: Option<IpAddr>| a.map_or("*".to_string(), |a| a.to_string());
    let (encr, encr_key, integ, integ_key) = match cipher {
        EspCipher::AesGcm16 { .. } => ("AES-GCM with 16 octet ICV [RFC4106]", keymat, "NULL", &keymat[..0]),
        EspCipher::AesCbcHmacSha256 { key_bits } => {
            let n = usize::from(key_bits / 8).min(keymat.len());
            ("AES-CBC [RFC3602]", &keymat[..n], "HMAC-SHA-256-128 [RFC4868]", &keymat[n..])
        }
    };
    let integ_key = if integ_key.is_empty() { Zeroizing::new(String::new()) } else { hex(integ_key) };
    Zeroizing::new(format!(
        "\"{family}\",\"{}\",\"{}\",\"0x{spi:08x}\",\"{encr}\",\"{}\",\"{integ}\",\"{}\"\n",
        addr(src),
        addr(dst),
        hex(encr_key).as_str(),
        integ_key.as_str()
    ))
}

/// Appends both directions of a child SA. Failures are logged, never fatal.
pub fn append(path: &Path, keys: &ChildKeys, remote: IpAddr, local: Option<IpAddr>) {
    let mut text = line(keys.spi_in, keys.cipher, &keys.keymat_in, Some(remote), local);
    text.push_str(&line(keys.spi_out, keys.cipher, &keys.keymat_out, local, Some(remote)));
    if let Err(e) = open_private(path).and_then(|mut f| f.write_all(text.as_bytes())) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the ESP key log");
    }
}

/// Opens the key log for appending, readable by its owner only. The mode
/// given at creation does nothing for a file that already exists, so an
/// existing file that others may read is refused, and a symbolic link is
/// not followed (it could point the keys anywhere).
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let file =
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)?;
    if let Some(mode) = causeway_config::exposed_mode(&file.metadata()?) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("the file is readable or writable by others (mode {mode:o}); chmod 600 it"),
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_log_is_private_or_not_written() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.keys");
        open_private(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);
        let open = dir.path().join("open.keys");
        std::fs::write(&open, "").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = open_private(&open).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        let link = dir.path().join("link.keys");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        assert!(open_private(&link).is_err(), "a symbolic link is not followed");
    }

    #[test]
    fn lines_follow_wiresharks_esp_sa_table() {
        let gcm = line(
            0xc0ffee01,
            EspCipher::AesGcm16 { key_bits: 128 },
            &[0xab; 20],
            Some("198.18.0.2".parse().unwrap()),
            None,
        );
        assert_eq!(
            gcm.as_str(),
            format!(
                "\"IPv4\",\"198.18.0.2\",\"*\",\"0xc0ffee01\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"\n",
                "ab".repeat(20)
            )
        );
        let mut keymat = vec![1u8; 32];
        keymat.extend([2u8; 32]);
        let cbc =
            line(7, EspCipher::AesCbcHmacSha256 { key_bits: 256 }, &keymat, None, Some("fd00::1".parse().unwrap()));
        assert!(cbc.starts_with("\"IPv6\",\"*\",\"fd00::1\",\"0x00000007\",\"AES-CBC [RFC3602]\""), "{}", cbc.as_str());
        assert!(cbc.contains(&format!(
            "\"0x{}\",\"HMAC-SHA-256-128 [RFC4868]\",\"0x{}\"",
            "01".repeat(32),
            "02".repeat(32)
        )));
    }
}
