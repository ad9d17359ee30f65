//! [`MachineSpec`]: the size of a test VM.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The size of a test VM: CPUs and memory of a local QEMU VM, written
/// `<cpus>-<memMB>` (kGymSuite's `qemu:<cpus>-<memMB>` is accepted too),
/// or a Compute Engine machine type, written `gce:<type>` (kGymSuite's
/// `gce:e2-standard-2`).
///
/// ```
/// use kgym_core::MachineSpec;
/// let m: MachineSpec = "qemu:2-1024".parse().unwrap();
/// assert_eq!((m.cpus, m.memory_mb, m.gce), (2, 1024, None));
/// assert_eq!(m.to_string(), "2-1024");
/// let g: MachineSpec = "gce:e2-standard-2".parse().unwrap();
/// assert_eq!(g.gce.map(|t| t.to_string()).as_deref(), Some("e2-standard-2"));
/// assert_eq!(g.to_string(), "gce:e2-standard-2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MachineSpec {
    /// Virtual CPUs (of a QEMU VM; the default for a GCE machine type,
    /// whose type says its size).
    pub cpus: u32,
    /// Memory in MiB (as `cpus`).
    pub memory_mb: u32,
    /// The Compute Engine machine type: the VM runs on GCE, not QEMU.
    pub gce: Option<GceMachineType>,
}

impl Default for MachineSpec {
    /// One CPU and 512 MiB: enough for a tinyconfig/KASAN kernel and a C
    /// reproducer, small enough to run several instances on a laptop.
    fn default() -> Self {
        Self { cpus: 1, memory_mb: 512, gce: None }
    }
}

impl MachineSpec {
    /// A QEMU VM of `cpus` CPUs and `memory_mb` MiB.
    pub fn qemu(cpus: u32, memory_mb: u32) -> Self {
        Self { cpus, memory_mb, gce: None }
    }
}

impl fmt::Display for MachineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.gce {
            Some(t) => write!(f, "gce:{t}"),
            None => write!(f, "{}-{}", self.cpus, self.memory_mb),
        }
    }
}

/// A Compute Engine machine type name (`e2-standard-2`,
/// `n2-custom-8-16384`): lowercase letters, digits and `-`, starting with
/// a letter, at most 63 bytes (GCE's name rule). Kept inline so
/// [`MachineSpec`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GceMachineType {
    len: u8,
    bytes: [u8; 63],
}

impl GceMachineType {
    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `from_str`).
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

impl fmt::Display for GceMachineType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for GceMachineType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GceMachineType({:?})", self.as_str())
    }
}

impl FromStr for GceMachineType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let ok = (1..=63).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(Error::InvalidMachine { input: format!("gce:{s}") });
        }
        let mut bytes = [0; 63];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Self { len: s.len() as u8, bytes })
    }
}

impl FromStr for MachineSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(t) = s.strip_prefix("gce:") {
            let t: GceMachineType = t.parse().map_err(|_| Error::InvalidMachine { input: s.to_owned() })?;
            return Ok(Self { gce: Some(t), ..Self::default() });
        }
        let bad = || Error::InvalidMachine { input: s.to_owned() };
        let body = s.strip_prefix("qemu:").unwrap_or(s);
        let (cpus, mem) = body.split_once('-').ok_or_else(bad)?;
        let cpus: u32 = cpus.parse().map_err(|_| bad())?;
        let memory_mb: u32 = mem.parse().map_err(|_| bad())?;
        if cpus == 0 || cpus > 256 || !(64..=1 << 20).contains(&memory_mb) {
            return Err(bad());
        }
        Ok(Self { cpus, memory_mb, gce: None })
    }
}

impl Serialize for MachineSpec {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MachineSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_rejects_nonsense() {
        assert_eq!("1-512".parse::<MachineSpec>().unwrap(), MachineSpec::qemu(1, 512));
        assert_eq!("qemu:4-2048".parse::<MachineSpec>().unwrap().cpus, 4);
        let gce: MachineSpec = "gce:n1-standard-2".parse().unwrap();
        assert_eq!(gce.gce.unwrap().as_str(), "n1-standard-2");
        let long = format!("gce:n{}", "1".repeat(62));
        assert_eq!(long.parse::<MachineSpec>().unwrap().to_string(), long);
        let too_long = format!("gce:n{}", "1".repeat(63));
        for bad in [
            "",
            "2",
            "0-512",
            "2-10",
            "a-b",
            "2-",
            "gce:",
            "gce:E2-standard-2",
            "gce:2-standard",
            "gce:e2-",
            "gce:e2 x",
        ] {
            assert!(bad.parse::<MachineSpec>().is_err(), "{bad:?} accepted");
        }
        assert!(too_long.parse::<MachineSpec>().is_err());
    }

    #[test]
    fn round_trips_through_serde() {
        for s in ["2-1024", "gce:e2-standard-2"] {
            let m: MachineSpec = serde_json::from_value(serde_json::json!(s)).unwrap();
            assert_eq!(serde_json::to_value(m).unwrap(), serde_json::json!(s));
        }
    }
}
