//! Who holds a lease: an identity unique to one process. The operator also reports its Events
//! under it (their `reportingInstance`), which bounds its length.

/// The longest identity: the operator's Events carry it as their `reportingInstance`, which
/// the API server refuses past 128 characters (counted as UTF-8 bytes, as here).
pub const IDENTITY_MAX: usize = 128;
/// What every identity ends with: a slash and a random 32-bit nonce in 8 hex digits.
const NONCE_LEN: usize = 9;
/// The longest name an identity is made from, before its nonce.
const NAME_MAX: usize = IDENTITY_MAX - NONCE_LEN;

/// A name no identity can be made from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdentity {
    #[error("an identity must not be empty")]
    Empty,
    #[error(
        "{given:?} is {len} characters long; at most {NAME_MAX} may be given, as smm appends a \
         {NONCE_LEN}-character nonce (\"/\" and 8 hex digits) and the identity, the \
         reportingInstance of the operator's Events, may have at most {IDENTITY_MAX}",
        len = given.len()
    )]
    TooLong { given: String },
}

/// Who holds a lease: `<role>/<host>/<pid>/<nonce>`. The random nonce keeps two processes
/// apart even when host and pid repeat (containers often run as pid 1 under one pod name, and
/// a restarted pod keeps its name), so a new process never mistakes an old holder's lease
/// for its own. A host name too long for [`IDENTITY_MAX`] is cut short (the nonce still keeps
/// the identity unique).
pub fn holder_identity(role: &str) -> String {
    // In a pod, POD_NAME (set from the downward API) names it; elsewhere the host does.
    let host = ["POD_NAME", "HOSTNAME"]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|h| !h.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".to_owned());
    with_nonce(&holder_name(role, &host, std::process::id()))
}

/// `<role>/<host>/<pid>`, the host cut short so that the name leaves room for the nonce.
fn holder_name(role: &str, host: &str, pid: u32) -> String {
    let pid = pid.to_string();
    let room = NAME_MAX.saturating_sub(role.len() + pid.len() + 2);
    format!("{role}/{}/{pid}", cut(host, room))
}

/// `name` and a random nonce: a holder counts a lease held under its identity as its own, so
/// two processes given one name must still differ.
pub fn unique_identity(name: &str) -> Result<String, InvalidIdentity> {
    if name.is_empty() {
        return Err(InvalidIdentity::Empty);
    }
    if name.len() > NAME_MAX {
        return Err(InvalidIdentity::TooLong {
            given: name.to_owned(),
        });
    }
    Ok(with_nonce(name))
}

fn with_nonce(name: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    // std's RandomState is seeded from the OS's randomness, once per process and per state.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{name}/{:08x}", hasher.finish() & 0xffff_ffff)
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let end = (0..=max.min(text.len()))
        .rev()
        .find(|&end| text.is_char_boundary(end))
        .unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_identities_are_unique_per_call_and_name_role_host_and_pid() {
        let (a, b) = (holder_identity("smm-cli"), holder_identity("smm-cli"));
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('/').collect();
        assert_eq!(parts.len(), 4, "{a}");
        assert_eq!(parts[0], "smm-cli");
        assert_eq!(parts[2], std::process::id().to_string());
        assert_eq!(parts[3].len(), NONCE_LEN - 1);
    }

    /// The nonce counts: a name that fits only without it is refused, naming what was given
    /// and both limits; one a character shorter makes an identity of exactly the limit.
    #[test]
    fn a_name_too_long_for_an_events_reporting_instance_is_refused() {
        let longest = "r".repeat(NAME_MAX);
        let identity = unique_identity(&longest).unwrap();
        assert_eq!(identity.len(), IDENTITY_MAX);
        assert!(identity.starts_with(&format!("{longest}/")), "{identity}");

        let over = format!("{longest}x");
        let refused = unique_identity(&over).unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!(
                "\"{over}\" is 120 characters long; at most 119 may be given, as smm appends a \
                 9-character nonce (\"/\" and 8 hex digits) and the identity, the \
                 reportingInstance of the operator's Events, may have at most 128"
            )
        );
        // The API server counts bytes: 60 two-byte characters are 120.
        assert!(unique_identity(&"é".repeat(60)).is_err());
        assert_eq!(unique_identity(""), Err(InvalidIdentity::Empty));
    }

    #[test]
    fn a_long_host_is_cut_so_the_default_identity_fits() {
        for max in [0, 1, 2, 5] {
            assert!(cut("aé", max).len() <= max);
        }
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aé", 3), "aé");
        // A pod name may have up to 253 characters.
        let name = holder_name("smm-operator", &"h".repeat(253), 4_194_304);
        assert_eq!(name.len(), NAME_MAX, "{name}");
        assert!(name.starts_with("smm-operator/hhh") && name.ends_with("h/4194304"));
        assert_eq!(
            holder_name("smm-cli", "node-1", 42),
            "smm-cli/node-1/42",
            "a short host is kept whole"
        );
    }
}
