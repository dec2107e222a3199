//! Credentials: the [`CredentialStore`] trait the verifier asks, and [`UserFile`], the
//! in-memory store read from `--sip-users FILE`.
//!
//! The file is TOML, one line per user and realm, holding HA1 hashes only (never a
//! password): `"alice@example.org" = { md5 = "<hex>", sha-256 = "<hex>" }`. The key splits
//! at its last `@` into user and realm; either hash may be left out (then that algorithm
//! fails for the user). `rtpanchor passwd USER REALM` prints such a line
//! ([`passwd_line`]).
#![forbid(unsafe_code)]

use std::collections::HashMap;

use serde::Deserialize;

use super::digest::{ha1, Algorithm};

/// Where the verifier finds a user's HA1 for a realm and algorithm.
pub trait CredentialStore {
    fn ha1(&self, user: &str, realm: &str, alg: Algorithm) -> Option<&str>;
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Entry {
    md5: Option<String>,
    #[serde(rename = "sha-256")]
    sha256: Option<String>,
}

/// Users and their HA1 hashes, keyed by (user, realm).
#[derive(Clone, Debug, Default)]
pub struct UserFile {
    users: HashMap<(String, String), Entry>,
}

impl UserFile {
    /// Parses the file's text; errors name the offending key.
    pub fn parse(text: &str) -> Result<UserFile, String> {
        let raw: HashMap<String, Entry> = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut users = HashMap::with_capacity(raw.len());
        for (key, e) in raw {
            let (user, realm) = key
                .rsplit_once('@')
                .filter(|(u, r)| !u.is_empty() && !r.is_empty())
                .ok_or_else(|| format!("{key:?}: the key must be \"user@realm\""))?;
            for (alg, h) in [(Algorithm::Md5, &e.md5), (Algorithm::Sha256, &e.sha256)] {
                if let Some(h) = h {
                    if h.len() != alg.hex_len() || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(format!(
                            "{key:?}: {} must be {} hex digits",
                            alg.name().to_ascii_lowercase(),
                            alg.hex_len()
                        ));
                    }
                }
            }
            if e.md5.is_none() && e.sha256.is_none() {
                return Err(format!("{key:?}: neither md5 nor sha-256 given"));
            }
            let e = Entry {
                md5: e.md5.map(|h| h.to_ascii_lowercase()),
                sha256: e.sha256.map(|h| h.to_ascii_lowercase()),
            };
            users.insert((user.to_owned(), realm.to_ascii_lowercase()), e);
        }
        Ok(UserFile { users })
    }

    /// Reads and parses a users file.
    pub fn load(path: &std::path::Path) -> Result<UserFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl CredentialStore for UserFile {
    fn ha1(&self, user: &str, realm: &str, alg: Algorithm) -> Option<&str> {
        let e = self
            .users
            .get(&(user.to_owned(), realm.to_ascii_lowercase()))?;
        match alg {
            Algorithm::Md5 => e.md5.as_deref(),
            Algorithm::Sha256 => e.sha256.as_deref(),
        }
    }
}

/// The users-file line for `user` in `realm` with `password` (both hashes). The realm is
/// lower-cased: challenges name it that way, and phones hash what the challenge says.
pub fn passwd_line(user: &str, realm: &str, password: &str) -> String {
    let realm = realm.to_ascii_lowercase();
    let realm = realm.as_str();
    let key = toml::Value::String(format!("{user}@{realm}"));
    format!(
        "{key} = {{ md5 = \"{}\", sha-256 = \"{}\" }}",
        ha1(Algorithm::Md5, user, realm, password),
        ha1(Algorithm::Sha256, user, realm, password)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_line_reads_back() {
        let mut text = passwd_line("alice", "Example.org", "s3cret");
        text.push('\n');
        text.push_str(&passwd_line("b\"ob@home", "example.org", "x"));
        let f = UserFile::parse(&text).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(
            f.ha1("alice", "example.org", Algorithm::Md5),
            Some(ha1(Algorithm::Md5, "alice", "example.org", "s3cret").as_str())
        );
        assert!(f.ha1("alice", "example.org", Algorithm::Sha256).is_some());
        assert!(f.ha1("b\"ob@home", "example.org", Algorithm::Md5).is_some());
        assert_eq!(f.ha1("alice", "other.org", Algorithm::Md5), None);
        assert!(!text.contains("s3cret"), "no clear password in the line");
    }

    #[test]
    fn bad_files_say_why() {
        for (text, why) in [
            ("\"alice\" = { md5 = \"00\" }", "user@realm"),
            ("\"a@r\" = { md5 = \"00\" }", "32 hex"),
            ("\"a@r\" = { }", "neither"),
            ("\"a@r\" = { password = \"x\" }", "unknown field"),
            ("not toml", ""),
        ] {
            let e = UserFile::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
