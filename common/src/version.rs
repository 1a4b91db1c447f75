//! Version parsing and ordering.
//!
//! Fleets mix version styles: semantic versions from release tags
//! (`2.0.0-rc1`), Debian package versions (`1:2.4.1-3`), and plain dotted
//! numbers. Multi-hop upgrade paths (3.38.0 → 3.39.0 → 3.39.1 → 3.40.0) need one
//! total order over all of them, so [`Version`] uses dpkg's algorithm, which
//! already handles the hard cases, plus two rules that map the semver habits
//! onto it:
//!
//! - **Shape**: `[epoch:]upstream[-revision]`. The epoch is a number and
//!   compares first (`1:1.0-1 > 2.0-1`), then the upstream part, then the
//!   revision (`1.0-2 > 1.0-1`). A missing epoch is 0 and a missing revision
//!   compares like `0`.
//! - **dpkg comparison** of upstream and revision: runs of digits compare
//!   numerically (`1.10 > 1.9`, leading zeros ignored), other characters
//!   compare with letters before non-letters, and `~` sorts before anything,
//!   even the end of the string (`1.0~beta < 1.0`).
//! - **Revision vs pre-release**: the text after the last `-` is a Debian
//!   revision only when it starts with a digit (`1.0-2`). Otherwise the first
//!   `-` of the upstream part starts a semver pre-release and is compared as
//!   dpkg's `~`, so `1.0.0-rc1 < 1.0.0` and `1.0.0-alpha < 1.0.0-alpha.1 <
//!   1.0.0-beta`. The ambiguous `1.0.0-1` is read the Debian way (revision 1),
//!   because numeric pre-releases are rare and package revisions are not.
//! - A leading `v` before a digit (`v1.2.3`, as in git tags) is ignored for
//!   ordering; [`Display`](std::fmt::Display) still shows the text as written.
//! - Like dpkg, `1.0 < 1.0.0` (a missing segment is smaller) and `1.01 == 1.1`
//!   (equality is by ordering, not by spelling).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A parsed version; see the module docs for the ordering rules.
#[derive(Debug, Clone)]
pub struct Version {
    raw: String,
    epoch: u64,
    /// Upstream part with the pre-release `-` already rewritten to `~`.
    upstream: String,
    revision: String,
}

/// Why a string is not a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version '{input}': {reason}")]
pub struct VersionError {
    pub input: String,
    pub reason: String,
}

impl Version {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The epoch (0 when absent).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The Debian revision, empty when absent.
    pub fn revision(&self) -> &str {
        &self.revision
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-' | '_')
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Version, VersionError> {
        let fail = |reason: &str| VersionError { input: s.to_string(), reason: reason.to_string() };
        if s.is_empty() {
            return Err(fail("empty"));
        }
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(fail("the epoch before ':' must be a number"));
                }
                let epoch = e.parse::<u64>().map_err(|_| fail("epoch too large"))?;
                (epoch, rest)
            }
            None => (0, s),
        };
        if let Some(c) = rest.chars().find(|c| !allowed(*c)) {
            return Err(fail(&format!("unexpected character {c:?}")));
        }
        let rest = match rest.strip_prefix(['v', 'V']) {
            Some(r) if r.starts_with(|c: char| c.is_ascii_digit()) => r,
            _ => rest,
        };
        let (upstream, revision) = match rest.rfind('-') {
            Some(i) if i > 0 && rest[i + 1..].starts_with(|c: char| c.is_ascii_digit()) => (&rest[..i], &rest[i + 1..]),
            _ => (rest, ""),
        };
        if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(fail("must start with a digit"));
        }
        if revision.contains('-') {
            return Err(fail("the revision cannot contain '-'"));
        }
        let upstream = match upstream.split_once('-') {
            Some((release, pre)) => format!("{release}~{pre}"),
            None => upstream.to_string(),
        };
        Ok(Version { raw: s.to_string(), epoch, upstream, revision: revision.to_string() })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| dpkg_cmp(&self.upstream, &other.upstream))
            .then_with(|| dpkg_cmp(&self.revision, &other.revision))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

// Equality follows the ordering so that `Eq` and `Ord` agree (`1.01 == 1.1`).
impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// dpkg's weight of a character in a non-digit run: `~` first, then the end
/// of the run, then letters, then everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternate non-digit runs (by [`weight`]) and digit runs
/// (numerically, without parsing, so any length works).
fn dpkg_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit_at = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit_at(a, i)) || (j < b.len() && !digit_at(b, j)) {
            let (wa, wb) = (weight(a.get(i).copied()), weight(b.get(j).copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit_at(a, i) && digit_at(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit_at(a, i) {
            return Ordering::Greater;
        }
        if digit_at(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn assert_lt(a: &str, b: &str) {
        assert!(v(a) < v(b), "{a} < {b}");
        assert!(v(b) > v(a), "{b} > {a}");
    }

    #[test]
    fn numeric_segments_compare_numerically() {
        assert_lt("1.9", "1.10");
        assert_lt("1.2.3", "1.2.10");
        assert_lt("3.38.0", "3.39.0");
        assert_lt("3.39.0", "3.39.1");
        assert_lt("3.39.1", "3.40.0");
        assert_lt("9", "10");
        assert_lt("1.99999999999999999999", "1.100000000000000000000");
    }

    #[test]
    fn leading_zeros_are_ignored_and_equality_follows_ordering() {
        assert_eq!(v("1.01"), v("1.1"));
        assert_eq!(v("1.01").to_string(), "1.01");
    }

    #[test]
    fn missing_segment_is_smaller() {
        assert_lt("1.0", "1.0.0");
    }

    #[test]
    fn pre_release_sorts_before_release() {
        assert_lt("1.0.0-rc1", "1.0.0");
        assert_lt("1.0.0-rc1", "1.0.0-rc2");
        assert_lt("1.0.0-alpha", "1.0.0-alpha.1");
        assert_lt("1.0.0-alpha.1", "1.0.0-alpha.beta");
        assert_lt("1.0.0-alpha.beta", "1.0.0-beta");
        assert_lt("1.0.0-beta.2", "1.0.0-beta.11");
        assert_lt("1.0.0-beta.11", "1.0.0-rc.1");
        assert_lt("1.0.0", "1.0.1-rc1");
    }

    #[test]
    fn epoch_wins_over_everything() {
        assert_lt("2.0-1", "1:1.0-1");
        assert_lt("9.9", "1:0.1");
        assert_eq!(v("0:1.0"), v("1.0"));
        assert_eq!(v("1:1.0-1").epoch(), 1);
    }

    #[test]
    fn debian_revision_compares_after_upstream() {
        assert_lt("1.0-1", "1.0-2");
        assert_lt("1.0-9", "1.0-10");
        assert_lt("1.0-10", "1.1-1");
        assert_eq!(v("1.0-0"), v("1.0"));
        assert_eq!(v("1.0-2").revision(), "2");
        assert_lt("1.0-1ubuntu1", "1.0-1ubuntu2");
    }

    #[test]
    fn pre_release_with_revision() {
        assert_eq!(v("2.0.0-rc1-3").revision(), "3");
        assert_lt("2.0.0-rc1-3", "2.0.0-1");
    }

    #[test]
    fn tilde_sorts_before_anything() {
        assert_lt("1.0~beta", "1.0");
        assert_lt("1.0~~", "1.0~");
        assert_lt("1.0~", "1.0");
        assert_lt("1.0~rc1", "1.0~rc2");
        assert_lt("1.0~rc1-1", "1.0-1");
    }

    #[test]
    fn letters_sort_before_other_characters() {
        assert_lt("1.0a", "1.0+");
        assert_lt("1.0", "1.0a");
        assert_lt("1.0", "1.0+dfsg");
    }

    #[test]
    fn leading_v_is_ignored() {
        assert_eq!(v("v1.2.3"), v("1.2.3"));
        assert_eq!(v("v1.2.3").to_string(), "v1.2.3");
        assert_lt("v1.9", "1.10");
    }

    #[test]
    fn sorting_a_list() {
        let mut list: Vec<Version> =
            ["1.10", "1:0.1", "1.0.0-rc1", "1.9", "1.0.0", "1.0~a", "2.0-1"].iter().map(|s| v(s)).collect();
        list.sort();
        let got: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["1.0~a", "1.0.0-rc1", "1.0.0", "1.9", "1.10", "2.0-1", "1:0.1"]);
    }

    #[test]
    fn rejects_malformed_versions() {
        for bad in ["", "abc", "x:1.0", ":1.0", "1.0 beta", "1.0/2", "v", "-1"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} should be rejected");
        }
        let err = "1.0 beta".parse::<Version>().unwrap_err();
        assert_eq!(err.to_string(), "invalid version '1.0 beta': unexpected character ' '");
    }

    #[test]
    fn serde_round_trip_as_a_string() {
        let json = serde_json::to_string(&v("1:2.0-3")).unwrap();
        assert_eq!(json, "\"1:2.0-3\"");
        let back: Version = serde_json::from_str(&json).unwrap();
        assert_eq!(back.as_str(), "1:2.0-3");
        assert!(serde_json::from_str::<Version>("\"nope\"").is_err());
    }
}
