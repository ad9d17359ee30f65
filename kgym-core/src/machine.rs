//! [`MachineSpec`]: the size of a test VM.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// CPUs and memory of a test VM; written `<cpus>-<memMB>` (kGymSuite's
/// `qemu:<cpus>-<memMB>` is accepted too).
///
/// ```
/// use kgym_core::MachineSpec;
/// let m: MachineSpec = "qemu:2-1024".parse().unwrap();
/// assert_eq!((m.cpus, m.memory_mb), (2, 1024));
/// assert_eq!(m.to_string(), "2-1024");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MachineSpec {
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mb: u32,
}

impl Default for MachineSpec {
    /// One CPU and 512 MiB: enough for a tinyconfig/KASAN kernel and a C
    /// reproducer, small enough to run several instances on a laptop.
    fn default() -> Self {
        Self { cpus: 1, memory_mb: 512 }
    }
}

impl fmt::Display for MachineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.cpus, self.memory_mb)
    }
}

impl FromStr for MachineSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidMachine { input: s.to_owned() };
        let body = s.strip_prefix("qemu:").unwrap_or(s);
        let (cpus, mem) = body.split_once('-').ok_or_else(bad)?;
        let cpus: u32 = cpus.parse().map_err(|_| bad())?;
        let memory_mb: u32 = mem.parse().map_err(|_| bad())?;
        if cpus == 0 || cpus > 256 || !(64..=1 << 20).contains(&memory_mb) {
            return Err(bad());
        }
        Ok(Self { cpus, memory_mb })
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
    fn parses_both_forms_and_rejects_nonsense() {
        assert_eq!("1-512".parse::<MachineSpec>().unwrap(), MachineSpec { cpus: 1, memory_mb: 512 });
        assert_eq!("qemu:4-2048".parse::<MachineSpec>().unwrap().cpus, 4);
        for bad in ["", "2", "gce:n1-standard-2", "0-512", "2-10", "a-b", "2-"] {
            assert!(bad.parse::<MachineSpec>().is_err(), "{bad:?} accepted");
        }
    }
}
