//! The settings swanctl.conf knows, level by level, split into those the
//! import reads and those Causeway has no use for; and the nearest known
//! key to a mistyped one, for the error that refuses it (strongSwan
//! refuses an unknown key too, so a typo must not pass as "not imported").

/// The settings of one level of swanctl.conf: those the import reads, and
/// those swanctl has that Causeway has no use for (listed, not refused).
/// From strongSwan 5.9's swanctl.conf(5) (src/swanctl/swanctl.opt) and
/// the vici plugin's parse rules, which refuse any other key.
pub(super) type Keys = (&'static [&'static str], &'static [&'static str]);

pub(super) const CONN_KEYS: Keys = (
    &[
        "version",
        "remote_addrs",
        "remote_port",
        "proposals",
        "encap",
        "dpd_delay",
        "rekey_time",
        "vips",
        "pools",
        "ppk_id",
        "ppk_required",
    ],
    &[
        // Read for the default identities and `dynamic` selectors only:
        // Causeway picks the IKE source address by route.
        "local_addrs",
        "local_port",
        "aggressive",
        "pull",
        "dscp",
        "mobike",
        "dpd_timeout",
        "fragmentation",
        "childless",
        "send_certreq",
        "send_cert",
        "ocsp",
        "keyingtries",
        "unique",
        "reauth_time",
        "over_time",
        "rand_time",
        "if_id_in",
        "if_id_out",
        "mediation",
        "mediated_by",
        "mediation_peer",
    ],
);

/// The settings of a `local`/`remote` authentication round.
pub(super) const ROUND_KEYS: Keys = (
    &["auth", "id", "round", "certs", "pubkeys", "cacerts", "ca_id"],
    &["groups", "cert_policy", "aaa_id", "eap_id", "xauth_id", "revocation"],
);

pub(super) const CHILD_KEYS: Keys = (
    &[
        "local_ts",
        "remote_ts",
        "esp_proposals",
        "rekey_time",
        "life_time",
        "start_action",
        "mode",
        "ah_proposals",
        "ipcomp",
    ],
    &[
        "updown",
        "hostaccess",
        "policies",
        "policies_fwd_out",
        "replay_window",
        "rand_time",
        "rekey_bytes",
        "life_bytes",
        "rand_bytes",
        "rekey_packets",
        "life_packets",
        "rand_packets",
        "dpd_action",
        "close_action",
        "inactivity",
        "reqid",
        "mark_in",
        "mark_in_sa",
        "mark_out",
        "set_mark_in",
        "set_mark_out",
        "tfc_padding",
        "priority",
        "interface",
        "hw_offload",
        "sha256_96",
        "copy_df",
        "copy_ecn",
        "copy_dscp",
        "if_id_in",
        "if_id_out",
        "label",
        "label_mode",
        // strongSwan 6.0's, so that a newer file is not called mistyped.
        "icmp",
        "per_cpu_sas",
    ],
);

/// The subsections a connection has besides its `local<suffix>` and
/// `remote<suffix>` rounds.
pub(super) const CONN_SECTIONS: &[&str] = &["children", "local", "remote"];

/// Why a key is refused, with the known key it most likely stands for.
pub(super) fn unknown<'k>(what: &str, key: &str, known: impl Iterator<Item = &'k str> + Clone) -> String {
    match nearest(key, known) {
        Some(k) => format!("not a swanctl {what}; did you mean {k}?"),
        None => format!("not a swanctl {what} (strongSwan refuses it too)"),
    }
}

/// The known key a mistyped one most likely stands for: the closest within
/// two edits (a swap of neighbours is one; short keys get one), else one
/// that starts with it or that it starts with (`child` for `children`).
pub(super) fn nearest<'k>(key: &str, known: impl Iterator<Item = &'k str> + Clone) -> Option<&'k str> {
    let key = key.to_ascii_lowercase();
    let most = (key.chars().count() / 3).clamp(1, 2);
    let close =
        known.clone().map(|k| (edits(&key, k), k)).filter(|&(d, _)| d <= most).min_by_key(|&(d, _)| d).map(|(_, k)| k);
    let long = |a: &str, b: &str| b.len() >= 4 && a.starts_with(b);
    close.or_else(|| known.into_iter().find(|k| long(k, &key) || long(&key, k)))
}

/// Edit distance with swaps of neighbours (optimal string alignment).
pub(super) fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys((read, unused): Keys) -> impl Iterator<Item = &'static str> + Clone {
        read.iter().chain(unused).copied()
    }

    #[test]
    fn a_mistyped_key_finds_the_one_it_stands_for() {
        assert_eq!(nearest("remote_addr", keys(CONN_KEYS)), Some("remote_addrs"), "a missing trailing s");
        assert_eq!(nearest("esp_proposal", keys(CHILD_KEYS)), Some("esp_proposals"));
        assert_eq!(nearest("local_addrss", keys(CONN_KEYS)), Some("local_addrs"), "an extra s");
        assert_eq!(nearest("dpd_dealy", keys(CONN_KEYS)), Some("dpd_delay"), "a swap is one edit");
        assert_eq!(nearest("Remote_Addrs", keys(CONN_KEYS)), Some("remote_addrs"), "case alone");
        assert_eq!(nearest("start", keys(CHILD_KEYS)), Some("start_action"), "the start of a key");
        assert_eq!(nearest("child", CONN_SECTIONS.iter().copied()), Some("children"));
        assert_eq!(nearest("ids", keys(ROUND_KEYS)), Some("id"));
        assert_eq!(nearest("xy", keys(ROUND_KEYS)), None, "two edits are too many for a short key");
        assert_eq!(nearest("frobnicate", keys(CONN_KEYS)), None);
    }

    #[test]
    fn edits_count_swaps_as_one() {
        assert_eq!(edits("", "abc"), 3);
        assert_eq!(edits("abc", "abc"), 0);
        assert_eq!(edits("abc", "acb"), 1);
        assert_eq!(edits("kitten", "sitting"), 3);
    }

    // A key is either read or listed as not imported, never both.
    #[test]
    fn the_key_lists_do_not_overlap() {
        for (read, unused) in [CONN_KEYS, ROUND_KEYS, CHILD_KEYS] {
            for k in read {
                assert!(!unused.contains(k), "{k}");
            }
        }
    }
}
