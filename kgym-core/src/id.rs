//! Newtype identifiers: [`JobId`], [`StageIndex`] and [`StageKind`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The id of a job: an auto-increment integer shown as 8 lowercase hex
/// digits (`0000002a`), as kGym shows its job ids.
///
/// ```
/// use kgym_core::JobId;
/// let id: JobId = "0000002a".parse().unwrap();
/// assert_eq!(id.get(), 42);
/// assert_eq!(id.to_string(), "0000002a");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(u64);

impl JobId {
    /// Wraps a raw integer id.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw integer behind the id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

impl FromStr for JobId {
    type Err = Error;

    /// Accepts 1 to 16 hex digits (kGym ids are exactly 8; shorter and longer
    /// forms are accepted so ids past 2^32 stay representable).
    fn from_str(s: &str) -> Result<Self> {
        let valid = !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(Error::InvalidJobId { input: s.to_owned() });
        }
        u64::from_str_radix(s, 16).map(JobId).map_err(|_| Error::InvalidJobId { input: s.to_owned() })
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The position of a stage in its job, from 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageIndex(pub u32);

impl StageIndex {
    /// The index as a `usize`, for indexing the job's stage list.
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for StageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for StageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageIndex({})", self.0)
    }
}

impl From<u32> for StageIndex {
    fn from(v: u32) -> Self {
        Self(v)
    }
}

/// The kind of a stage: names the worker queue that runs it (`build`,
/// `reproduce`, `patch-check`, or a user-defined kind).
///
/// A kind is 1–64 characters of `[a-z0-9_-]`, so it is safe in artifact keys
/// and queue names.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StageKind(String);

impl StageKind {
    /// The stock kernel build stage.
    pub const BUILD: &'static str = "build";
    /// The stock reproduce-in-a-VM stage.
    pub const REPRODUCE: &'static str = "reproduce";
    /// The stock patch pre-check stage (apply + compile touched objects).
    pub const PATCH_CHECK: &'static str = "patch-check";

    /// Validates and wraps a kind name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        if Self::is_valid_name(&name) { Ok(Self(name)) } else { Err(Error::InvalidStageKind { input: name }) }
    }

    /// Whether `name` is a valid kind name: 1–64 characters of `[a-z0-9_-]`.
    /// A `const fn`, so a kind name fixed in code is checked at compile time
    /// (see [`StageArgs::kind`](crate::stage::StageArgs::kind)).
    pub const fn is_valid_name(name: &str) -> bool {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > 64 {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Wraps a name already checked with [`is_valid_name`](Self::is_valid_name).
    pub(crate) fn from_checked(name: &str) -> Self {
        debug_assert!(Self::is_valid_name(name));
        Self(name.to_owned())
    }

    /// The stock build kind.
    pub fn build() -> Self {
        Self(Self::BUILD.to_owned())
    }

    /// The stock reproduce kind.
    pub fn reproduce() -> Self {
        Self(Self::REPRODUCE.to_owned())
    }

    /// The stock patch-check kind.
    pub fn patch_check() -> Self {
        Self(Self::PATCH_CHECK.to_owned())
    }

    /// The kind's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageKind({})", self.0)
    }
}

impl FromStr for StageKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for StageKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_shows_eight_hex_digits_and_round_trips() {
        let id = JobId::new(0x2a);
        assert_eq!(id.to_string(), "0000002a");
        assert_eq!("0000002a".parse::<JobId>().unwrap(), id);
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"0000002a\"");
        let back: JobId = serde_json::from_str("\"0000002a\"").unwrap();
        assert_eq!(back, id);
        assert_eq!(JobId::new(u64::MAX).to_string(), "ffffffffffffffff");
    }

    #[test]
    fn job_id_rejects_garbage() {
        for bad in ["", "xyz", "-1", "00000000000000000", "12 34"] {
            assert!(bad.parse::<JobId>().is_err(), "{bad:?} parsed");
        }
        assert!(serde_json::from_str::<JobId>("\"nothex\"").is_err());
    }

    #[test]
    fn stage_kind_validates_names() {
        assert_eq!(StageKind::new("patch-check").unwrap().as_str(), "patch-check");
        for bad in ["", "Build", "a/b", "../x", "sp ace", &"x".repeat(65)] {
            assert!(StageKind::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_str::<StageKind>("\"../etc\"").is_err());
    }
}
