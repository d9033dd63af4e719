//! The etcd connection: credentials read at start (before privileges are
//! dropped, since the files may be root's) and again at each reload, for
//! the next connection; connect options; and every call bounded in time,
//! so an unreachable store shows up as an error within seconds instead of
//! a hang.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use zeroize::Zeroizing;

use super::RegistryError;

/// Longest wait for one request (and for a connection).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// CA bundle, client certificate and key, PEM.
struct TlsPem {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
}

/// Reads the TLS key, checking the file it opened (the configuration's
/// check of the path came earlier, and the file may have been swapped
/// since).
fn read_private(p: &std::path::Path, owners: &causeway_config::Owners) -> Result<Zeroizing<Vec<u8>>, RegistryError> {
    use std::io::Read;
    let err = |source| RegistryError::ReadFile { path: p.to_path_buf(), source };
    let (file, meta) = causeway_config::open_regular(p).map_err(err)?;
    if let Some(mode) = causeway_config::exposed_mode(&meta) {
        return Err(err(std::io::Error::other(format!(
            "{} (mode {mode:03o}); run `chmod 600 {}`",
            causeway_config::exposure(mode),
            p.display()
        ))));
    }
    causeway_config::check_owner(p, &meta, owners).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    // Capacity up front so the key is never copied into memory freed
    // unwiped.
    let mut key = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    (&file).read_to_end(&mut key).map_err(err)?;
    Ok(key)
}

/// What authenticates this gateway to etcd, in memory for reconnects.
pub struct Credentials {
    tls: Option<TlsPem>,
    user: Option<(String, Zeroizing<String>)>,
}

impl Credentials {
    pub fn load(reg: &causeway_config::Registry) -> Result<Credentials, RegistryError> {
        // Not blocking on a FIFO put in a file's place: a reload reads
        // these again.
        let read = |p: &std::path::Path| {
            use std::io::Read;
            let mut bytes = Vec::new();
            causeway_config::open_regular(p)
                .and_then(|(mut file, _)| file.read_to_end(&mut bytes))
                .map_err(|source| RegistryError::ReadFile { path: p.to_path_buf(), source })?;
            Ok(bytes)
        };
        let tls = match &reg.tls {
            Some(t) => Some(TlsPem {
                ca: read(&t.ca_file)?,
                cert: read(&t.cert_file)?,
                key: read_private(&t.key_file, &t.key_owners)?,
            }),
            None => None,
        };
        let user = match &reg.user {
            Some((name, pw)) => {
                let text = std::str::from_utf8(&pw.0).map_err(|_| RegistryError::PasswordNotUtf8)?;
                Some((name.clone(), Zeroizing::new(text.to_string())))
            }
            None => None,
        };
        Ok(Credentials { tls, user })
    }

    /// Takes `new` (read again at a reload) for the next connection, and
    /// says so when it differs. The key and the password are compared in
    /// constant time.
    pub fn replace(&mut self, new: Credentials) {
        use subtle::ConstantTimeEq;
        let same_tls = match (&self.tls, &new.tls) {
            (Some(a), Some(b)) => a.ca == b.ca && a.cert == b.cert && bool::from(a.key.ct_eq(&b.key)),
            (None, None) => true,
            _ => false,
        };
        let same_user = match (&self.user, &new.user) {
            (Some((n, p)), Some((m, q))) => n == m && bool::from(p.as_bytes().ct_eq(q.as_bytes())),
            (None, None) => true,
            _ => false,
        };
        if !(same_tls && same_user) {
            tracing::info!(
                "registry: new credentials read ({}); the next connection uses them",
                match (same_tls, same_user) {
                    (false, false) => "TLS files and password",
                    (false, true) => "TLS files",
                    _ => "password",
                }
            );
        }
        *self = new;
    }

    fn options(&self) -> ConnectOptions {
        // HTTP/2 pings find a store that vanished without closing the
        // connection (a partition, a powered-off host); require_leader makes
        // a member cut off from its cluster refuse rather than serve a
        // stale watch.
        let mut o = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some((name, pw)) = &self.user {
            // etcd-client keeps its own copy of the password for token
            // refreshes; that copy is not wiped.
            o = o.with_user(name.clone(), pw.as_str()).with_auto_token_refresh(true);
        }
        if let Some(pem) = &self.tls {
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&pem.ca))
                .identity(etcd_client::Identity::from_pem(&pem.cert, pem.key.as_slice()));
            o = o.with_tls(tls);
        }
        o
    }
}

/// Bounds a store call in time.
pub async fn timed<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", describe(&e))),
        Err(_) => Err(format!("{what}: no answer in {} s", CALL_TIMEOUT.as_secs())),
    }
}

/// Connects to one member, the first of `endpoints` that answers, trying
/// them in turn from `*start`; `*start` is left at the one connected to,
/// so the caller moves on with `+ 1` after that member fails it.
///
/// One member at a time, not etcd-client's balanced channel over all of
/// them: that channel keeps sending some calls to a member that died, so
/// every session failed on one of its calls while a live member was
/// there to serve all of them.
pub async fn connect(endpoints: &[String], creds: &Credentials, start: &mut usize) -> Result<Client, String> {
    let mut errors = Vec::new();
    for i in 0..endpoints.len() {
        let at = (*start % endpoints.len() + i) % endpoints.len();
        // The client connects lazily: a status call shows the member is
        // there before a session's calls depend on it.
        let attempt = async {
            let mut c = timed("connecting", Client::connect([&endpoints[at]], Some(creds.options()))).await?;
            timed("asking the member's status", c.status()).await?;
            Ok::<Client, String>(c)
        };
        match attempt.await {
            Ok(c) => {
                *start = at;
                return Ok(c);
            }
            Err(e) => errors.push(format!("{}: {e}", endpoints[at])),
        }
    }
    Err(errors.join("; "))
}

/// An error as an operator reads it: tonic's transport errors hide their
/// cause (connection refused, TLS) in the source chain.
pub fn describe(e: &etcd_client::Error) -> String {
    let mut text = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(s) = next {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        next = s.source();
    }
    text
}
