//! `[registry]`: where the fleet's membership lives (an etcd v3 cluster),
//! and how this gateway appears in it.
//!
//! Invariants of a validated `Registry`: at least one endpoint, all of one
//! scheme (`http://` or `https://`), and `https://` exactly when TLS files
//! are given; a prefix that starts with `/` and has no trailing `/`; site
//! and name by the peer-name rule, and `{site}.{name}` (the name other
//! gateways give this one) a valid peer name too; at least one advertised
//! endpoint. Secret files (the TLS key, the password) are regular files
//! only their owner may read; the password is read now, the TLS files when
//! the gateway connects.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;
use zeroize::Zeroizing;

use crate::checker::Checker;
use crate::key::{read_secret_file, KeyError};
use crate::locate::join;
use crate::rules;
use crate::schema::RawRegistry;
use crate::types::{Endpoint, Psk, Registry, RegistryTls};

/// Key prefix of the fleet's records when `prefix` is not given.
pub const DEFAULT_REGISTRY_PREFIX: &str = "/causeway";
/// The record's lease: a gateway that stops refreshing it drops out this
/// long after.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// Bounds of `lease_ttl`, in seconds. etcd raises a shorter lease to its
/// own minimum (about 2 s with its default timings).
pub const LEASE_TTL_SECS: std::ops::RangeInclusive<u32> = 2..=3600;
/// Keepalive of peers learnt from the registry: a second, so a silent
/// gateway is noticed within `failover_after`.
pub const DEFAULT_REGISTRY_KEEPALIVE: u16 = 1;
/// `failover_after` of peers learnt from the registry: three missed
/// keepalives.
pub const DEFAULT_REGISTRY_FAILOVER: Duration = Duration::from_secs(3);

/// An etcd client URL: `http://` or `https://`, then host:port (an
/// address, `[v6]` or a DNS name), nothing after. Returns whether it is
/// https.
pub(crate) fn etcd_url(text: &str) -> Result<bool, String> {
    let hint = "expected an etcd client URL, such as http://198.18.0.100:2379 or https://etcd1.example:2379";
    // `user:password@` in a URL: the text is not shown, it holds a secret.
    if let Some((_, host)) = text.rsplit_once('@') {
        return Err(format!(
            "an endpoint ending in \"@{host}\" carries credentials; they go in `user` and `password_file`, not in the URL; {hint}"
        ));
    }
    let (tls, rest) = if let Some(r) = text.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = text.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!("\"{text}\" has no http:// or https://; {hint}"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(format!("\"{text}\" has a path; {hint}"));
    }
    rest.parse::<Endpoint>().map_err(|e| format!("{e} (in \"{text}\"); {hint}"))?;
    Ok(tls)
}

/// A key prefix: `/` and then printable characters other than spaces; a
/// trailing `/` is dropped, since the keys below it add their own.
pub(crate) fn registry_prefix(text: &str) -> Result<String, String> {
    let trimmed = text.trim_end_matches('/');
    let ok = text.starts_with('/') && !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_graphic());
    if !ok || trimmed.len() > 128 {
        return Err(format!(
            "expected a key prefix starting with '/', such as \"{DEFAULT_REGISTRY_PREFIX}\" (printable, no spaces, up to 128 characters), got \"{text}\""
        ));
    }
    Ok(trimmed.to_string())
}

/// A secret file that is not read now (a TLS key): a regular file only its
/// owner may read.
fn private_file(path: &Path, owners: &crate::key::Owners) -> Result<(), KeyError> {
    let shown = path.display().to_string();
    let meta =
        std::fs::metadata(path).map_err(|e| KeyError::Unreadable { path: shown.clone(), reason: e.to_string() })?;
    if let Some(mode) = crate::key::exposed_mode(&meta) {
        return Err(KeyError::Permissions { path: shown, mode });
    }
    crate::key::check_owner(path, &meta, owners)?;
    if !meta.is_file() {
        return Err(KeyError::Unreadable { path: shown, reason: "not a regular file".into() });
    }
    Ok(())
}

impl Checker<'_> {
    fn registry_name(
        &mut self,
        key: &str,
        v: &Option<Spanned<String>>,
        span: &std::ops::Range<usize>,
        example: &str,
    ) -> Option<String> {
        let field = join("registry", key);
        match v {
            Some(n) => rules::peer_name(n.get_ref())
                .map_err(|e| self.report(n.span(), field, e))
                .ok()
                .map(|_| n.get_ref().clone()),
            None => {
                self.report(span.clone(), field, format!("missing {key}: set {key} = \"{example}\""));
                None
            }
        }
    }

    /// A file that must exist and be a regular file (a CA bundle, a
    /// certificate), its path resolved against the configuration's.
    fn public_file(&mut self, field: &str, f: &Spanned<String>) -> std::path::PathBuf {
        let path = self.resolve_path(f.get_ref());
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => self.report(f.span(), field, format!("{} is not a regular file", path.display())),
            Err(e) => self.report(f.span(), field, format!("cannot read {}: {e}", path.display())),
        }
        path
    }

    pub(crate) fn registry(&mut self, raw: &Spanned<RawRegistry>) -> Option<Registry> {
        let t = "registry";
        let span = raw.span();
        let raw = raw.get_ref();
        let before = self.problems.len();
        if raw.endpoints.is_empty() {
            self.report(
                span.clone(),
                join(t, "endpoints"),
                "missing endpoints: the etcd client URLs, such as endpoints = [\"http://198.18.0.100:2379\"]",
            );
        }
        let mut schemes = Vec::new();
        for e in &raw.endpoints {
            match etcd_url(e.get_ref()) {
                Ok(tls) => schemes.push((tls, e.span())),
                Err(m) => self.report(e.span(), join(t, "endpoints"), m),
            }
        }
        if let Some((_, s)) = schemes.iter().find(|(tls, _)| *tls != schemes[0].0) {
            self.report(
                s.clone(),
                join(t, "endpoints"),
                "mixed http:// and https:// endpoints: use one scheme for all",
            );
        }
        let https = schemes.first().is_some_and(|(tls, _)| *tls);
        let prefix = match &raw.prefix {
            Some(p) => registry_prefix(p.get_ref()).map_err(|e| self.report(p.span(), join(t, "prefix"), e)).ok(),
            None => Some(DEFAULT_REGISTRY_PREFIX.to_string()),
        };
        let site = self.registry_name("site", &raw.site, &span, "east");
        let name = self.registry_name("name", &raw.name, &span, "east-gw1");
        if let (Some(s), Some(n), Some(f)) = (&site, &name, &raw.name) {
            // Other gateways know this one by this name.
            if let Err(e) = rules::peer_name(&format!("{s}.{n}")) {
                self.report(
                    f.span(),
                    join(t, "name"),
                    format!("\"{s}.{n}\" (site.name, this gateway's name on the others) is too long: {e}"),
                );
            }
        }
        if raw.advertise.is_empty() {
            self.report(
                span.clone(),
                join(t, "advertise"),
                "missing advertise: the endpoints other gateways reach this one at, such as advertise = [\"198.18.0.1:51820\"]",
            );
        }
        let advertise: Vec<Endpoint> = raw
            .advertise
            .iter()
            .filter_map(|e| {
                let parsed = e.get_ref().parse::<Endpoint>().map_err(|m| m.to_string()).and_then(|ep| {
                    // A zone names an interface of this host only.
                    let zoned = matches!(&ep, Endpoint::Host { host, .. } if host.contains('%'))
                        || matches!(&ep, Endpoint::Addr(std::net::SocketAddr::V6(a)) if a.scope_id() != 0);
                    if zoned {
                        Err("a link-local address with a zone means nothing to other gateways; advertise an address they route to".to_string())
                    } else {
                        Ok(ep)
                    }
                });
                parsed.map_err(|m| self.report(e.span(), join(t, "advertise"), m)).ok()
            })
            .collect();
        let lease_ttl = match &raw.lease_ttl {
            None => DEFAULT_LEASE_TTL,
            Some(v) if LEASE_TTL_SECS.contains(v.get_ref()) => Duration::from_secs(u64::from(*v.get_ref())),
            Some(v) => {
                self.report(
                    v.span(),
                    join(t, "lease_ttl"),
                    format!(
                        "expected {} to {} seconds, got {}",
                        LEASE_TTL_SECS.start(),
                        LEASE_TTL_SECS.end(),
                        v.get_ref()
                    ),
                );
                DEFAULT_LEASE_TTL
            }
        };
        let failover_after = match &raw.failover_after {
            None => DEFAULT_REGISTRY_FAILOVER,
            Some(f) => rules::failover_after(u64::from(*f.get_ref()))
                .map_err(|e| self.report(f.span(), join(t, "failover_after"), e))
                .unwrap_or(DEFAULT_REGISTRY_FAILOVER),
        };
        let tls = self.registry_tls(raw, https, &span);
        let user = self.registry_user(raw);
        if self.problems.len() != before {
            return None;
        }
        Some(Registry {
            endpoints: raw.endpoints.iter().map(|e| e.get_ref().trim_end_matches('/').to_string()).collect(),
            prefix: prefix?,
            site: site?,
            name: name?,
            advertise,
            lease_ttl,
            tls,
            user,
            persistent_keepalive: raw
                .persistent_keepalive
                .as_ref()
                .map_or(DEFAULT_REGISTRY_KEEPALIVE, |k| *k.get_ref()),
            failover_after,
        })
    }

    /// TLS takes the three files together, and only with https endpoints.
    fn registry_tls(&mut self, raw: &RawRegistry, https: bool, span: &std::ops::Range<usize>) -> Option<RegistryTls> {
        let t = "registry";
        let given = [("ca_file", &raw.ca_file), ("cert_file", &raw.cert_file), ("key_file", &raw.key_file)];
        let any = given.iter().find_map(|(_, f)| f.as_ref());
        match any {
            None if https => {
                self.report(
                    span.clone(),
                    join(t, "endpoints"),
                    "https:// endpoints need ca_file, cert_file and key_file (the CA that signed etcd's certificate, and this gateway's client certificate and key)",
                );
                return None;
            }
            None => return None,
            Some(f) if !https => {
                self.report(f.span(), t, "TLS files are given but the endpoints are http://: write them https://");
                return None;
            }
            Some(_) => {}
        }
        for (field, f) in given {
            if f.is_none() {
                self.report(
                    span.clone(),
                    join(t, field),
                    format!("missing {field}: TLS needs ca_file, cert_file and key_file together"),
                );
            }
        }
        let ca = raw.ca_file.as_ref().map(|f| self.public_file(&join(t, "ca_file"), f));
        let cert = raw.cert_file.as_ref().map(|f| self.public_file(&join(t, "cert_file"), f));
        let key = raw.key_file.as_ref().map(|f| {
            let path = self.resolve_path(f.get_ref());
            if let Err(e) = private_file(&path, &self.owners) {
                self.report(f.span(), join(t, "key_file"), e.to_string());
            }
            path
        });
        Some(RegistryTls { ca_file: ca?, cert_file: cert?, key_file: key?, key_owners: self.owners.clone() })
    }

    /// etcd authentication: the user and the password file, together.
    fn registry_user(&mut self, raw: &RawRegistry) -> Option<(String, Psk)> {
        let t = "registry";
        match (&raw.user, &raw.password_file) {
            (None, None) => None,
            (Some(u), None) => {
                self.report(
                    u.span(),
                    join(t, "password_file"),
                    "user needs password_file: a file (mode 0600) holding the etcd password",
                );
                None
            }
            (None, Some(p)) => {
                self.report(p.span(), join(t, "user"), "password_file needs user: the etcd user name");
                None
            }
            (Some(u), Some(p)) => {
                let ok = !u.get_ref().is_empty()
                    && u.get_ref().len() <= 128
                    && u.get_ref().chars().all(|c| c.is_ascii_graphic());
                if !ok {
                    self.report(
                        u.span(),
                        join(t, "user"),
                        "expected an etcd user name (printable, no spaces, up to 128 characters)",
                    );
                }
                let password = read_secret_file(&self.resolve_path(p.get_ref()), Some(&self.owners))
                    .map_err(|e| e.to_string())
                    .and_then(|text| {
                        let line = text.trim_end_matches(['\n', '\r']);
                        if line.is_empty() {
                            Err("the password file is empty".to_string())
                        } else {
                            Ok(Zeroizing::new(line.as_bytes().to_vec()))
                        }
                    })
                    .map_err(|e| self.report(p.span(), join(t, "password_file"), e))
                    .ok()?;
                ok.then(|| (u.get_ref().clone(), Psk(password)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const KEY_A: &str = "CE5vbW26f1Ayh5znQQ3b1pWt4oE+w3ScwymAsBl6lkU=";

    /// A configuration with `registry` as its `[registry]` body, in a
    /// directory holding `files` (name, mode).
    fn load(registry: &str, files: &[(&str, u32)]) -> (tempfile::TempDir, Result<crate::Config, crate::ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, mode) in files {
            let p = dir.path().join(name);
            std::fs::write(&p, "s3cret-password\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        let file = dir.path().join("gw.toml");
        std::fs::write(&file, format!("[interface]\nprivate_key = \"{KEY_A}\"\n\n[registry]\n{registry}")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = crate::load(&file);
        (dir, c)
    }

    const MINIMAL: &str = "endpoints = [\"http://198.18.0.100:2379\"]\nsite = \"east\"\nname = \"east-gw1\"\nadvertise = [\"198.18.0.1:51820\"]\n";

    fn problems(registry: &str, files: &[(&str, u32)]) -> Vec<(usize, String, String)> {
        let (_d, c) = load(registry, files);
        c.unwrap_err().problems().iter().map(|p| (p.line, p.field.clone(), p.message.clone())).collect()
    }

    #[test]
    fn the_contract_example_with_defaults() {
        let (_d, c) = load(MINIMAL, &[]);
        let r = c.unwrap().registry.unwrap();
        assert_eq!(r.endpoints, ["http://198.18.0.100:2379"]);
        assert_eq!((r.prefix.as_str(), r.site.as_str(), r.name.as_str()), ("/causeway", "east", "east-gw1"));
        assert_eq!(r.advertise, [Endpoint::Addr("198.18.0.1:51820".parse().unwrap())]);
        assert_eq!(r.lease_ttl, DEFAULT_LEASE_TTL);
        assert_eq!((r.persistent_keepalive, r.failover_after), (1, DEFAULT_REGISTRY_FAILOVER));
        assert!(r.tls.is_none() && r.user.is_none());
        let (_d, c) = load("", &[]);
        assert!(c.is_err(), "an empty [registry] is refused");
    }

    #[test]
    fn a_zoned_address_is_not_advertised() {
        for zoned in ["[fe80::1%eth0]:51820", "[fe80::1%2]:51820"] {
            let p = problems(&MINIMAL.replace("198.18.0.1:51820", zoned), &[]);
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].1 == "registry.advertise" && p[0].2.contains("means nothing to other gateways"), "{p:?}");
        }
    }

    #[test]
    fn every_field_given() {
        let body = format!(
            "{MINIMAL}prefix = \"/fleet/prod/\"\nlease_ttl = 3\npersistent_keepalive = 2\nfailover_after = 5\nuser = \"causeway\"\npassword_file = \"etcd.pw\"\n"
        );
        let (_d, c) = load(&body, &[("etcd.pw", 0o600)]);
        let r = c.unwrap().registry.unwrap();
        assert_eq!(r.prefix, "/fleet/prod", "the trailing slash goes");
        assert_eq!((r.lease_ttl.as_secs(), r.persistent_keepalive, r.failover_after.as_secs()), (3, 2, 5));
        let (user, pw) = r.user.unwrap();
        assert_eq!((user.as_str(), &pw.0[..]), ("causeway", &b"s3cret-password"[..]));
    }

    #[test]
    fn tls_files_come_together_with_https() {
        let https = MINIMAL.replace("http://", "https://");
        let tls = "ca_file = \"ca.pem\"\ncert_file = \"gw.pem\"\nkey_file = \"gw.key\"\n";
        let files = [("ca.pem", 0o644), ("gw.pem", 0o644), ("gw.key", 0o600)];
        let (d, c) = load(&format!("{https}{tls}"), &files);
        let t = c.unwrap().registry.unwrap().tls.unwrap();
        assert_eq!(t.key_file, d.path().join("gw.key"), "relative to the configuration");
        let p = problems(&format!("{https}{tls}"), &[("ca.pem", 0o644), ("gw.pem", 0o644), ("gw.key", 0o640)]);
        assert_eq!((p[0].0, p[0].1.as_str()), (11, "registry.key_file"), "{p:?}");
        assert!(p[0].2.contains("chmod 600"), "{p:?}");
        let p = problems(&https, &[]);
        assert!(p[0].1 == "registry.endpoints" && p[0].2.contains("need ca_file"), "{p:?}");
        let p = problems(&format!("{MINIMAL}{tls}"), &files);
        assert!(p[0].2.contains("endpoints are http://"), "{p:?}");
        let p = problems(&format!("{https}ca_file = \"ca.pem\"\n"), &files);
        assert_eq!(p.iter().map(|p| p.1.as_str()).collect::<Vec<_>>(), ["registry.cert_file", "registry.key_file"]);
        let p = problems(&format!("{https}{tls}"), &[("gw.pem", 0o644), ("gw.key", 0o600)]);
        assert!(p[0].1 == "registry.ca_file" && p[0].2.contains("cannot read"), "{p:?}");
    }

    #[test]
    fn a_readable_password_file_is_refused() {
        let body = format!("{MINIMAL}user = \"causeway\"\npassword_file = \"etcd.pw\"\n");
        let p = problems(&body, &[("etcd.pw", 0o644)]);
        assert_eq!((p[0].0, p[0].1.as_str()), (10, "registry.password_file"));
        assert!(p[0].2.contains("chmod 600"), "{p:?}");
        let p = problems(&format!("{MINIMAL}user = \"causeway\"\n"), &[]);
        assert!(p[0].1 == "registry.password_file" && p[0].2.contains("user needs password_file"), "{p:?}");
        let p = problems(&format!("{MINIMAL}password_file = \"etcd.pw\"\n"), &[("etcd.pw", 0o600)]);
        assert_eq!(p[0].1, "registry.user");
    }

    #[test]
    fn each_mistake_names_its_line_and_field() {
        let body = "endpoints = [\"198.18.0.100:2379\", \"http://etcd:x\"]\nprefix = \"causeway\"\nsite = \"a b\"\nname = \"gw/1\"\nadvertise = [\"198.18.0.1\"]\nlease_ttl = 1\nfailover_after = 0\nbogus = 1\n";
        let p = problems(body, &[]);
        assert_eq!(p.len(), 1, "the parser refuses the unknown field first: {p:?}");
        assert_eq!((p[0].0, p[0].1.as_str()), (12, "registry.bogus"));
        let body = body.replace("bogus = 1\n", "");
        let got: Vec<_> = problems(&body, &[]).into_iter().map(|(l, f, _)| (l, f)).collect();
        let want = [
            (5, "registry.endpoints"),
            (5, "registry.endpoints"),
            (6, "registry.prefix"),
            (7, "registry.site"),
            (8, "registry.name"),
            (9, "registry.advertise"),
            (10, "registry.lease_ttl"),
            (11, "registry.failover_after"),
        ];
        assert_eq!(got, want.map(|(l, f)| (l, f.to_string())));
        let p = problems("endpoints = []\n", &[]);
        let fields: Vec<_> = p.iter().map(|p| p.1.as_str()).collect();
        assert_eq!(fields, ["registry.endpoints", "registry.site", "registry.name", "registry.advertise"], "{p:?}");
        assert!(p[1].2.contains("missing site"), "{p:?}");
    }

    #[test]
    fn the_name_others_see_must_be_a_peer_name() {
        let body = MINIMAL.replace("east-gw1", &"g".repeat(62));
        let p = problems(&body, &[]);
        assert!(p[0].1 == "registry.name" && p[0].2.contains("too long"), "{p:?}");
    }

    #[test]
    fn urls_and_prefixes() {
        assert_eq!(etcd_url("http://198.18.0.100:2379"), Ok(false));
        assert_eq!(etcd_url("https://[fd00::1]:2379/"), Ok(true));
        assert_eq!(etcd_url("https://etcd-1.example:2379"), Ok(true));
        assert!(etcd_url("198.18.0.100:2379").unwrap_err().contains("no http://"));
        assert!(etcd_url("http://198.18.0.100").unwrap_err().contains("no port"));
        assert!(etcd_url("http://198.18.0.100:2379/v3").unwrap_err().contains("has a path"));
        // Credentials in the URL are refused without showing them.
        for with_secret in ["http://root:Hunter2Secret@198.18.0.10:2379", "root:Hunter2Secret@198.18.0.10:2379"] {
            let e = etcd_url(with_secret).unwrap_err();
            assert!(e.contains("password_file") && !e.contains("Hunter2"), "{e}");
        }
        assert_eq!(registry_prefix("/a/b//").unwrap(), "/a/b");
        for bad in ["a", "/", "", "/a b"] {
            assert!(registry_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
