//! The guest architectures this crate boots.
//!
//! [`Arch`] is `#[non_exhaustive]`: kgym will name more architectures than
//! any one runner supports. A run converts its `Arch` once
//! ([`GuestArch::try_from`]) and refuses the others with
//! [`Error::UnsupportedArch`]; past that point every choice (QEMU binary,
//! busybox, syzkaller's target) matches [`GuestArch`] exhaustively, so a new
//! guest is a compile error in each place that must learn it.

use kgym_core::stage::build::Arch;

use crate::error::Error;

/// An architecture kgym-vm can boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum GuestArch {
    /// 64-bit x86.
    X86_64,
    /// 32-bit x86.
    I386,
}

impl TryFrom<Arch> for GuestArch {
    type Error = Error;

    fn try_from(arch: Arch) -> Result<Self, Error> {
        match arch {
            Arch::X86_64 => Ok(Self::X86_64),
            Arch::I386 => Ok(Self::I386),
            other => Err(Error::UnsupportedArch { arch: other }),
        }
    }
}

impl From<GuestArch> for Arch {
    fn from(g: GuestArch) -> Self {
        match g {
            GuestArch::X86_64 => Arch::X86_64,
            GuestArch::I386 => Arch::I386,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guest_round_trips() {
        for g in [GuestArch::X86_64, GuestArch::I386] {
            assert_eq!(GuestArch::try_from(Arch::from(g)).unwrap(), g);
        }
    }
}
