//! The kernel command line: syzkaller's crash-finding defaults plus the
//! user's additions ([`KernelCmdline`]).

use crate::error::{Error, Result};

/// syzkaller's Linux defaults, without the console (added per machine).
pub(crate) const SYZKALLER_DEFAULTS: &[&str] = &[
    "earlyprintk=serial",
    "oops=panic",
    "nmi_watchdog=panic",
    "panic_on_warn=1",
    "panic=1",
    "ftrace_dump_on_oops=orig_cpu",
    "vsyscall=native",
    "net.ifnames=0",
    "biosdevname=0",
];

/// A kernel command line as an ordered list of parameters.
///
/// The defaults are the ones syzkaller's QEMU backend gives every Linux VM
/// (`vm/qemu/qemu.go`, `linuxCmdline`), so a crash here is reported the way
/// syzbot reports it:
///
/// | parameter | why |
/// |---|---|
/// | `console=ttyS0` | kernel messages and `/dev/console` on the serial port we read |
/// | `earlyprintk=serial` | output from the very first boot steps (a kernel that dies early still says why) |
/// | `oops=panic` | an oops ends the run with a complete report instead of a half-alive kernel |
/// | `nmi_watchdog=panic` | hard lockups become reports |
/// | `panic_on_warn=1` | `WARNING:`s and KASAN reports panic, as on syzbot |
/// | `panic=1` | reboot 1 s after a panic; with QEMU's `-no-reboot` the VM exits by itself |
/// | `ftrace_dump_on_oops=orig_cpu` | the ftrace buffer of the crashing CPU, when tracing is on |
/// | `vsyscall=native` | old static binaries (reproducers) keep working |
/// | `net.ifnames=0 biosdevname=0` | the NIC is `eth0` in disk images |
///
/// A user parameter replaces a default of the same name (`panic_on_warn=0`
/// turns that default off, `console=tty0` moves the console away).
///
/// ```
/// use kgym_vm::KernelCmdline;
/// let mut c = KernelCmdline::crash_finding();
/// c.extend_user("panic_on_warn=0 dyndbg=\"file sys.c +p\"").unwrap();
/// let text = c.render();
/// assert!(text.starts_with("console=ttyS0 "));
/// assert!(text.contains("panic_on_warn=0") && !text.contains("panic_on_warn=1"));
/// assert!(text.ends_with("dyndbg=\"file sys.c +p\""));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    params: Vec<String>,
}

impl KernelCmdline {
    /// An empty command line.
    pub fn new() -> Self {
        Self::default()
    }

    /// `console=ttyS0` plus syzkaller's Linux defaults (the table above).
    pub fn crash_finding() -> Self {
        let mut c = Self::new();
        c.set("console=ttyS0");
        for p in SYZKALLER_DEFAULTS {
            c.set(*p);
        }
        c
    }

    /// Sets one parameter, replacing any with the same name.
    pub fn set(&mut self, param: impl Into<String>) -> &mut Self {
        let param = param.into();
        let name = param_name(&param).to_owned();
        if let Some(slot) = self.params.iter_mut().find(|p| param_name(p) == name) {
            *slot = param;
        } else {
            self.params.push(param);
        }
        self
    }

    /// Adds the user's parameters (shell-like quoting: `a="x y"` is one
    /// parameter); each replaces a default of the same name.
    pub fn extend_user(&mut self, text: &str) -> Result<&mut Self> {
        let words = shlex::split(text).ok_or_else(|| Error::InvalidRequest {
            reason: format!("kernel command line {text:?} has unbalanced quotes"),
        })?;
        for w in words {
            // Keep the value's quotes for the kernel, which understands
            // `name="a b"` itself.
            let param = match w.split_once('=') {
                Some((name, value)) if value.contains(char::is_whitespace) => format!("{name}=\"{value}\""),
                _ => w,
            };
            self.set(param);
        }
        Ok(self)
    }

    /// The value of parameter `name`, if set (`Some("")` for a bare flag).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|p| param_name(p) == name).map(|p| p.split_once('=').map_or("", |(_, v)| v))
    }

    /// The parameters in order.
    pub fn params(&self) -> &[String] {
        &self.params
    }

    /// The line passed to QEMU's `-append`.
    pub fn render(&self) -> String {
        self.params.join(" ")
    }
}

fn param_name(param: &str) -> &str {
    param.split_once('=').map_or(param, |(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_syzkaller() {
        let c = KernelCmdline::crash_finding();
        assert_eq!(c.get("console"), Some("ttyS0"));
        assert_eq!(c.get("panic_on_warn"), Some("1"));
        assert_eq!(c.get("oops"), Some("panic"));
        assert_eq!(c.get("panic"), Some("1"));
        assert_eq!(c.params().len(), SYZKALLER_DEFAULTS.len() + 1);
    }

    #[test]
    fn user_params_override_and_append() {
        let mut c = KernelCmdline::crash_finding();
        c.extend_user("  console=tty0 rdinit=/bogus nokaslr ").unwrap();
        assert_eq!(c.get("console"), Some("tty0"));
        assert_eq!(c.get("rdinit"), Some("/bogus"));
        assert_eq!(c.get("nokaslr"), Some(""));
        assert!(c.render().ends_with("rdinit=/bogus nokaslr"));
        // The console keeps its place: it replaced the default in-line.
        assert!(c.render().starts_with("console=tty0 earlyprintk=serial"));
    }

    #[test]
    fn quotes_are_kept_for_the_kernel_and_unbalanced_ones_rejected() {
        let mut c = KernelCmdline::new();
        c.extend_user("a='x y' b=1").unwrap();
        assert_eq!(c.render(), "a=\"x y\" b=1");
        let err = c.extend_user("a=\"oops").unwrap_err();
        assert!(matches!(err, Error::InvalidRequest { .. }));
    }
}
