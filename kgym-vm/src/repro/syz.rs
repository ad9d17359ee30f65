//! syzkaller programs (kGym's `log` reproducers): options from the
//! program's header, the `syz-execprog` command line, and (in
//! [`provider`]) the binaries built from a syzkaller checkout at a commit.

pub mod provider;

use kgym_core::stage::build::Arch;

use crate::error::{Error, Result};

pub use provider::{GO_BIN_FALLBACK, SYZKALLER_REPO, SkippedCommit, SyzBinaries, SyzkallerProvider};

/// Options of a syzkaller program, read from its `#{...}` header line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyzOptions {
    /// Run each call in its own thread.
    pub threaded: bool,
    /// Legacy collide mode (old syzkaller).
    pub collide: bool,
    /// Repeat the program forever.
    pub repeat: bool,
    /// Parallel executor processes.
    pub procs: u32,
    /// Sandbox (`none`, `setuid`, `namespace`, `android`).
    pub sandbox: String,
    /// Fault injection: the call to fail and the nth allocation, when on.
    pub fault: Option<(i64, i64)>,
    /// Slowdown factor (newer syzkaller).
    pub slowdown: u32,
}

impl Default for SyzOptions {
    /// syzkaller's defaults for a program without a header.
    fn default() -> Self {
        Self {
            threaded: true,
            collide: false,
            repeat: true,
            procs: 1,
            sandbox: "none".into(),
            fault: None,
            slowdown: 1,
        }
    }
}

impl SyzOptions {
    /// Reads the options from the first `#{...}` line of `program`; a program
    /// without one gets the defaults. Both header formats are understood:
    /// the old JSON one (`#{"threaded":true,"procs":6,...}`) and the newer Go
    /// one (`#{Threaded:true Repeat:true Procs:1 Sandbox:none ...}`).
    ///
    /// Like syzkaller when it runs a reproducer, `repeat` and `threaded` are
    /// then forced on: both only raise the chance to reproduce.
    pub fn from_program(program: &str) -> Result<Self> {
        let mut o = Self::default();
        let Some(header) = program.lines().map(str::trim).find(|l| l.starts_with("#{")) else {
            return Ok(o);
        };
        let body = &header[1..];
        let pairs = if body.starts_with("{\"") { json_pairs(body)? } else { go_pairs(body)? };
        let mut fault_on: Option<bool> = None;
        let (mut fault_call, mut fault_nth) = (-1i64, 0i64);
        for (k, v) in pairs {
            let b = || v == "true";
            let n = |what: &str| -> Result<i64> {
                v.parse().map_err(|_| Error::BadSyzProgram { reason: format!("{what} is {v:?}, not a number") })
            };
            match k.to_ascii_lowercase().as_str() {
                "threaded" => o.threaded = b(),
                "collide" => o.collide = b(),
                "repeat" => o.repeat = b(),
                "procs" => o.procs = u32::try_from(n("procs")?.max(1)).unwrap_or(1),
                "sandbox" => o.sandbox = if v.is_empty() { "none".into() } else { v.clone() },
                "fault" => fault_on = Some(b()),
                "fault_call" | "faultcall" => fault_call = n("fault_call")?,
                "fault_nth" | "faultnth" => fault_nth = n("fault_nth")?,
                "slowdown" => o.slowdown = u32::try_from(n("slowdown")?.max(1)).unwrap_or(1),
                _ => {}
            }
        }
        // The oldest headers have no "fault" key: a fault_call >= 0 means
        // on. Newer ones say it (and keep FaultCall:0 when it is off).
        if fault_on.unwrap_or(fault_call >= 0) && fault_call >= 0 {
            o.fault = Some((fault_call, fault_nth));
        }
        o.repeat = true;
        o.threaded = true;
        Ok(o)
    }
}

fn json_pairs(body: &str) -> Result<Vec<(String, String)>> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| Error::BadSyzProgram { reason: format!("header {body:?} is not valid JSON: {e}") })?;
    let obj = v.as_object().ok_or_else(|| Error::BadSyzProgram { reason: "header is not an object".into() })?;
    Ok(obj.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect())
}

/// Go's `%+v` of a struct: `{A:1 B:x C:{D:false}}`; nested structs are
/// flattened (`LegacyOptions:{Collide:true}` gives `Collide`).
fn go_pairs(body: &str) -> Result<Vec<(String, String)>> {
    let bad = || Error::BadSyzProgram { reason: format!("header {body:?} is not a {{Key:value ...}} list") };
    let inner = body.strip_prefix('{').and_then(|b| b.strip_suffix('}')).ok_or_else(bad)?;
    let mut out = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let colon = rest.find(':').ok_or_else(bad)?;
        let key = rest[..colon].trim().to_owned();
        rest = &rest[colon + 1..];
        if rest.starts_with('{') {
            let end = rest.find('}').ok_or_else(bad)?;
            out.extend(go_pairs(&rest[..=end])?);
            rest = rest[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push((key, rest[..end].to_owned()));
            rest = rest[end..].trim_start();
        }
    }
    Ok(out)
}

/// The `syz-execprog` command that runs `prog` (paths as seen in the guest),
/// as syzkaller's `ExecprogCmd` builds it; `nproc` overrides the header's
/// `procs` (kGym's `nproc`).
pub fn execprog_command(
    execprog: &str,
    executor: &str,
    arch: Arch,
    opts: &SyzOptions,
    nproc: Option<u32>,
    prog: &str,
) -> String {
    let mut cmd = format!(
        "{execprog} -executor={executor} -arch={} -sandbox={} -procs={} -repeat={} -threaded={} -collide={} -cover=0",
        arch.syz_name(),
        opts.sandbox,
        nproc.unwrap_or(opts.procs).max(1),
        if opts.repeat { 0 } else { 1 },
        opts.threaded,
        opts.collide,
    );
    if let Some((call, nth)) = opts.fault {
        cmd.push_str(&format!(" -fault_call={call} -fault_nth={nth}"));
    }
    cmd.push(' ');
    cmd.push_str(prog);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "# https://syzkaller.appspot.com/bug?id=1\n#{\"threaded\":true,\"collide\":true,\"repeat\":true,\"procs\":6,\"sandbox\":\"namespace\",\"fault_call\":-1,\"tun\":true}\nr0 = openat(0xffffffffffffff9c, &(0x7f0000000000)='./file0\\x00', 0x0, 0x0)\n";
    const NEW: &str = "# https://syzkaller.appspot.com/bug?id=2\n# See https://goo.gl/kgGztJ for information about syzkaller reproducers.\n#{Threaded:false Repeat:false RepeatTimes:0 Procs:2 Slowdown:3 Sandbox:setuid SandboxArg:0 Leak:false NetInjection:true Cgroups:true UseTmpDir:true HandleSegv:true Repro:false Trace:false LegacyOptions:{Collide:false Fault:true FaultCall:4 FaultNth:7}}\nr0 = socket$inet(0x2, 0x1, 0x0)\n";

    #[test]
    fn old_json_headers_parse() {
        let o = SyzOptions::from_program(OLD).unwrap();
        assert_eq!(o.procs, 6);
        assert_eq!(o.sandbox, "namespace");
        assert!(o.collide && o.repeat && o.threaded);
        assert_eq!(o.fault, None);
    }

    #[test]
    fn new_go_headers_parse_with_nested_legacy_options() {
        let o = SyzOptions::from_program(NEW).unwrap();
        assert_eq!(o.procs, 2);
        assert_eq!(o.sandbox, "setuid");
        assert_eq!(o.slowdown, 3);
        assert_eq!(o.fault, Some((4, 7)));
        // Forced on, as syzkaller does when reproducing.
        assert!(o.repeat && o.threaded && !o.collide);
    }

    #[test]
    fn fault_injection_is_off_when_the_header_says_so() {
        let off =
            "#{Threaded:true Procs:1 Sandbox:none LegacyOptions:{Collide:false Fault:false FaultCall:0 FaultNth:0}}\n";
        assert_eq!(SyzOptions::from_program(off).unwrap().fault, None);
        let oldest = "#{\"threaded\":true,\"procs\":1,\"fault_call\":2,\"fault_nth\":5}\n";
        assert_eq!(SyzOptions::from_program(oldest).unwrap().fault, Some((2, 5)));
    }

    #[test]
    fn headerless_programs_get_defaults_and_bad_headers_are_errors() {
        assert_eq!(SyzOptions::from_program("r0 = socket(0x2, 0x1, 0x0)\n").unwrap(), SyzOptions::default());
        assert!(matches!(SyzOptions::from_program("#{\"procs\":\"x\"}\n"), Err(Error::BadSyzProgram { .. })));
        assert!(matches!(SyzOptions::from_program("#{Procs:2 Broken\n"), Err(Error::BadSyzProgram { .. })));
    }

    #[test]
    fn execprog_command_matches_syzkaller() {
        let o = SyzOptions::from_program(NEW).unwrap();
        let c = execprog_command("./syz-execprog", "./syz-executor", Arch::X86_64, &o, None, "prog.syz");
        assert_eq!(
            c,
            "./syz-execprog -executor=./syz-executor -arch=amd64 -sandbox=setuid -procs=2 -repeat=0 \
             -threaded=true -collide=false -cover=0 -fault_call=4 -fault_nth=7 prog.syz"
        );
        let old = SyzOptions::from_program(OLD).unwrap();
        let c = execprog_command("e", "x", Arch::I386, &old, Some(3), "p");
        assert_eq!(
            c,
            "e -executor=x -arch=386 -sandbox=namespace -procs=3 -repeat=0 -threaded=true -collide=true -cover=0 p"
        );
    }
}
