//! [`Timeouts`]: the watchdogs of a boot, with syzkaller's values.

use std::time::Duration;

use kgym_core::stage::reproduce::Accel;

/// Watchdog timeouts of a boot.
///
/// The no-output rule is syzkaller's (`vm/vm.go`, `monitorExecution`, and
/// `sys/targets`, `Timeouts`): a syzkaller program is alive while
/// `syz-execprog` prints `executed programs:` (at most every 5 s, and
/// `executing program` with `-output`); no such line for
/// [`no_output`](Self::no_output) is `no output from test machine`, whatever
/// else the console prints. syzkaller merged its former `test machine is
/// not executing programs` into that title in 2017. A C reproducer prints no
/// such lines, so for it console silence is the rule.
///
/// syzkaller scales the timeout by `min(slowdown, 3)` and runs TCG guests
/// with slowdown 10: under TCG the effective value is
/// [`no_output`](Self::no_output) × [`tcg_scale`](Self::tcg_scale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// From QEMU's start to userspace (init's marker, or SSH answering).
    pub boot: Duration,
    /// syzkaller's `NoOutput` (5 min): how long a run may show no sign of
    /// life after userspace (see the type's docs).
    pub no_output: Duration,
    /// What [`no_output`](Self::no_output) is multiplied by under TCG
    /// (syzkaller: 3).
    pub tcg_scale: u32,
    /// How long a started crash report may take to complete before it is
    /// taken as it is.
    pub report: Duration,
    /// How long to wait for a crash report after the SSH session dropped
    /// before calling it `lost connection to test machine`.
    pub lost_connection_grace: Duration,
    /// Console silence after which QEMU is asked over QMP whether the guest
    /// still runs (a paused or failed VM ends the boot at once instead of
    /// at the no-output timeout); asked again after each such silence.
    pub quiet_check: Duration,
}

impl Default for Timeouts {
    /// syzkaller's no-output timeout (5 min, ×3 under TCG), a 5-minute
    /// boot allowance (TCG boots of big kernels are slow), a status check
    /// after 10 s of silence (syzkaller's monitor ticks every 10 s).
    fn default() -> Self {
        Self {
            boot: Duration::from_secs(300),
            no_output: Duration::from_secs(300),
            tcg_scale: 3,
            report: Duration::from_secs(15),
            lost_connection_grace: Duration::from_secs(10),
            quiet_check: Duration::from_secs(10),
        }
    }
}

impl Timeouts {
    /// The no-output timeout of a guest under `accel`.
    pub fn no_output_for(&self, accel: Accel) -> Duration {
        match accel {
            Accel::Tcg => self.no_output * self.tcg_scale.max(1),
            Accel::Kvm | Accel::Cloud => self.no_output,
        }
    }

    pub(crate) fn check(&self) -> crate::Result<()> {
        let all = [self.boot, self.no_output, self.report, self.lost_connection_grace, self.quiet_check];
        if all.iter().any(Duration::is_zero) || self.tcg_scale == 0 {
            return Err(crate::Error::InvalidRequest { reason: "watchdog timeouts must be positive".into() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_scales_the_no_output_timeout_as_syzkaller_does() {
        let t = Timeouts::default();
        assert_eq!(t.no_output_for(Accel::Kvm), Duration::from_secs(300));
        assert_eq!(t.no_output_for(Accel::Tcg), Duration::from_secs(900));
        assert!(t.check().is_ok());
        assert!(Timeouts { tcg_scale: 0, ..t }.check().is_err());
        assert!(Timeouts { quiet_check: Duration::ZERO, ..t }.check().is_err());
    }
}
