//! The `make` invocation of a kernel build: out-of-tree (`O=`), with a
//! reproducible environment (fixed build timestamp/user/host/version,
//! fixed randstruct seed, path-independent objects through
//! `-ffile-prefix-map`), the chosen toolchain (gcc, or clang + `LLVM=1`),
//! `ccache` when available, and `-j` from the machine.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use kgym_core::stage::build::{Arch, Compiler, Linker};

use crate::error::{Error, Result};
use crate::log::BuildLog;
use crate::process::{self, Finished, Limits, find_tool_in};
use kgym_proc::GroupRecord;
use tokio::process::Command;

/// The file in a warm tree's directory recording the process group of the
/// make running in it.
pub(crate) const MAKE_GROUP_FILE: &str = "make-group.json";

/// The programs `LLVM=1` makes the kernel's Makefile use besides clang.
pub const LLVM_BINUTILS: [&str; 7] =
    ["ld.lld", "llvm-ar", "llvm-nm", "llvm-objcopy", "llvm-objdump", "llvm-readelf", "llvm-strip"];

/// The fixed build timestamp (any `date -d`-parsable text works; the
/// kernel prints it in `uname -v` and stamps the built-in initramfs).
pub const BUILD_TIMESTAMP: &str = "Sat Jan  1 00:00:00 UTC 2000";
/// [`BUILD_TIMESTAMP`] as seconds since the epoch.
const SOURCE_DATE_EPOCH: &str = "946684800";
/// The fixed `KBUILD_BUILD_USER` / `KBUILD_BUILD_HOST`.
pub const BUILD_USER_HOST: &str = "kgym";

/// Variables from the caller's environment that would change the build.
const SCRUBBED_ENV: [&str; 17] = [
    "ARCH",
    "CROSS_COMPILE",
    "KCFLAGS",
    "KAFLAGS",
    "KCPPFLAGS",
    "KBUILD_OUTPUT",
    "KBUILD_EXTMOD",
    "KBUILD_ABS_SRCTREE",
    "LOCALVERSION",
    "LLVM",
    "LLVM_IAS",
    "HOSTCFLAGS",
    "HOSTLDFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "CCACHE_PREFIX",
];

/// How `ccache` is used.
#[derive(Debug, Clone)]
pub(crate) struct Ccache {
    /// The `ccache` program.
    pub program: PathBuf,
    /// `CCACHE_DIR`, when not the user's default.
    pub dir: Option<PathBuf>,
}

/// Everything `make` needs to build one tree.
#[derive(Debug, Clone)]
pub(crate) struct MakeEnv {
    /// The source tree.
    pub src: PathBuf,
    /// The out-of-tree build directory.
    pub out: PathBuf,
    /// Target architecture.
    pub arch: Arch,
    /// C compiler.
    pub compiler: Compiler,
    /// Linker override.
    pub linker: Option<Linker>,
    /// `ccache`, when used.
    pub ccache: Option<Ccache>,
    /// `make -j`.
    pub jobs: usize,
    /// Extra make arguments from the request.
    pub make_args: Vec<String>,
    /// A script writing a fixed randstruct seed (replaces
    /// `scripts/gen-randstruct-seed.sh`).
    pub seed_script: Option<PathBuf>,
}

impl MakeEnv {
    /// The directory holding the tree (source and, inside it, the build
    /// directory): ccache's base directory and git's ceiling.
    fn tree_root(&self) -> &Path {
        self.src.parent().unwrap_or(&self.src)
    }

    fn compiler_name(&self) -> &'static str {
        match self.compiler {
            Compiler::Gcc => "gcc",
            Compiler::Clang => "clang",
        }
    }

    /// Whether the build uses the LLVM toolchain (`LLVM=1`): clang with its
    /// usual linker (lld) or with lld asked for explicitly.
    pub fn llvm(&self) -> bool {
        self.compiler == Compiler::Clang && self.linker != Some(Linker::Ld)
    }

    /// The programs the build needs on PATH: make and kconfig's generators,
    /// the compiler, and the binutils the kernel's Makefile picks — with
    /// `LLVM=1` lld and the LLVM binutils (`LD`, `AR`, `NM`, `OBJCOPY`,
    /// `OBJDUMP`, `READELF`, `STRIP` of the top Makefile), GNU binutils
    /// otherwise.
    pub fn required_tools(&self) -> Vec<&'static str> {
        let mut tools = vec!["make", self.compiler_name(), "flex", "bison", "bc"];
        if self.llvm() {
            tools.extend(LLVM_BINUTILS);
        } else {
            if self.linker == Some(Linker::Lld) {
                tools.push("ld.lld");
            } else {
                tools.push("ld");
            }
            tools.extend(["ar", "nm", "objcopy"]);
        }
        tools
    }

    /// Fails with [`Error::MissingTool`] naming the first program of
    /// [`required_tools`](Self::required_tools) that is not in `path` (a
    /// `PATH`-style list), so a missing tool is reported before any work,
    /// not as a make error minutes later.
    pub fn check_tools_in(&self, path: &OsStr) -> Result<()> {
        match self.required_tools().into_iter().find(|t| find_tool_in(t, path).is_none()) {
            Some(tool) => Err(Error::MissingTool { tool: tool.to_owned() }),
            None => Ok(()),
        }
    }

    /// Compiler flags that make objects independent of where the tree is.
    /// The build directory is a subdirectory of the source tree, so kbuild
    /// already uses relative paths (`srctree` is `..`); the maps turn
    /// `../kernel/sys.c` into `kernel/sys.c` and the build directory (the
    /// compilation directory in debug info) into `.`, the absolute source
    /// path covering what kbuild still passes absolute.
    fn prefix_maps(&self) -> String {
        format!(
            "-ffile-prefix-map={}/= -ffile-prefix-map={}=. -ffile-prefix-map=../=",
            self.src.display(),
            self.out.display()
        )
    }

    /// The make arguments for `targets`.
    pub fn args(&self, targets: &[&str]) -> Vec<String> {
        let mut args = vec![
            "-C".to_owned(),
            self.src.display().to_string(),
            format!("O={}", self.out.display()),
            format!("-j{}", self.jobs.max(1)),
            format!("ARCH={}", self.arch.make_arch()),
        ];
        let cc = self.compiler_name();
        match &self.ccache {
            Some(c) => {
                let prog = c.program.display();
                args.push(format!("CC={prog} {cc}"));
                args.push(format!("HOSTCC={prog} {cc}"));
            }
            None if self.compiler == Compiler::Clang => {
                args.push("CC=clang".to_owned());
                args.push("HOSTCC=clang".to_owned());
            }
            None => {}
        }
        if self.llvm() {
            args.push("LLVM=1".to_owned());
        } else if self.linker == Some(Linker::Lld) {
            args.push("LD=ld.lld".to_owned());
        }
        let mut kcflags = self.prefix_maps();
        let mut kaflags = self.prefix_maps();
        for a in &self.make_args {
            if let Some(user) = a.strip_prefix("KCFLAGS=") {
                kcflags = format!("{kcflags} {user}");
            } else if let Some(user) = a.strip_prefix("KAFLAGS=") {
                kaflags = format!("{kaflags} {user}");
            }
        }
        args.push(format!("KCFLAGS={kcflags}"));
        args.push(format!("KAFLAGS={kaflags}"));
        if let Some(seed) = &self.seed_script {
            args.push(format!("gen-randstruct-seed={}", seed.display()));
        }
        args.extend(
            self.make_args.iter().filter(|a| !a.starts_with("KCFLAGS=") && !a.starts_with("KAFLAGS=")).cloned(),
        );
        args.extend(targets.iter().map(|t| (*t).to_owned()));
        args
    }

    /// The environment variables set for make.
    pub fn envs(&self) -> Vec<(&'static str, String)> {
        let root = self.tree_root().display().to_string();
        let mut env = vec![
            ("KBUILD_BUILD_TIMESTAMP", BUILD_TIMESTAMP.to_owned()),
            ("KBUILD_BUILD_USER", BUILD_USER_HOST.to_owned()),
            ("KBUILD_BUILD_HOST", BUILD_USER_HOST.to_owned()),
            ("KBUILD_BUILD_VERSION", "1".to_owned()),
            ("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_owned()),
            ("LC_ALL", "C".to_owned()),
            ("TZ", "UTC".to_owned()),
            // setlocalversion must see the tree's own repository (or none),
            // never an enclosing one.
            ("GIT_CEILING_DIRECTORIES", root.clone()),
        ];
        if let Some(c) = &self.ccache {
            env.push(("CCACHE_BASEDIR", root));
            // Objects are path-independent (prefix maps), so the working
            // directory need not be part of the key.
            env.push(("CCACHE_NOHASHDIR", "1".to_owned()));
            if let Some(dir) = &c.dir {
                env.push(("CCACHE_DIR", dir.display().to_string()));
            }
        }
        env
    }

    /// The `make` command for `targets`.
    pub fn command(&self, targets: &[&str]) -> Command {
        // A tree (sub-makes, compilers): it dies as a whole with its owner.
        let mut cmd = process::tree_command("make");
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        cmd.args(self.args(targets)).envs(self.envs()).current_dir(&self.src);
        cmd
    }

    /// Where the process group of a make running in this tree is
    /// recorded ([`MAKE_GROUP_FILE`] in the tree's directory).
    pub fn group_record(&self) -> PathBuf {
        self.tree_root().join(MAKE_GROUP_FILE)
    }

    /// Runs make for `targets`; any exit status is returned. While it runs
    /// its process group is recorded in [`group_record`](Self::group_record):
    /// if this process dies, the next owner of the tree stops whatever of it
    /// still runs before it builds (`warm_tree::TreeStore::open`).
    pub async fn run(&self, targets: &[&str], limits: &Limits, log: &BuildLog) -> Result<Finished> {
        let phase = format!("make {}", targets.join(" "));
        log.step(&format!("running {phase}"));
        let record = self.group_record();
        let on_spawn = |group: &GroupRecord| match serde_json::to_vec(group) {
            Ok(json) => {
                if let Err(e) = std::fs::write(&record, json) {
                    tracing::warn!(path = %record.display(), error = %e, "cannot record make's process group");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot record make's process group"),
        };
        let done =
            process::run_recorded(self.command(targets), &phase, None, limits, Some(log), Some(Box::new(on_spawn)))
                .await;
        // The group is gone (reaped, or killed with its stragglers).
        let _ = std::fs::remove_file(&record);
        done
    }
}

/// The objects make reported compiling (`  CC      kernel/sys.o`).
pub(crate) fn compiled_objects(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            if words.next() != Some("CC") {
                return None;
            }
            let mut target = words.next()?;
            if target == "[M]" {
                target = words.next()?;
            }
            (target.ends_with(".o") && words.next().is_none()).then(|| target.to_owned())
        })
        .collect()
}

/// The first compiler/linker error line of a build's output.
pub(crate) fn first_error(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find(|l| {
            l.contains(": error: ")
                || l.contains(": fatal error: ")
                || l.starts_with("error: ")
                || l.contains("undefined reference to")
                || l.contains("No rule to make target")
        })
        .map(|l| l.trim().to_owned())
}

/// A script that writes the fixed randstruct seed and its hash header
/// (the interface of the kernel's `scripts/gen-randstruct-seed.sh`).
pub(crate) const SEED_SCRIPT: &str = r##"#!/bin/sh
# kgym: a fixed randstruct seed, so that builds are reproducible.
SEED=6b67796d2072616e64737472756374207365656420666f7220726570726f6475
echo "$SEED" > "$1"
HASH=$(printf '%s' "$SEED" | sha256sum | cut -d" " -f1)
echo "#define RANDSTRUCT_HASHED_SEED \"$HASH\"" > "$2"
"##;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(compiler: Compiler, linker: Option<Linker>, ccache: bool) -> MakeEnv {
        MakeEnv {
            src: "/d/trees/k/src".into(),
            out: "/d/trees/k/src/.kgym-out".into(),
            arch: Arch::I386,
            compiler,
            linker,
            ccache: ccache.then(|| Ccache { program: "/usr/bin/ccache".into(), dir: Some("/cc".into()) }),
            jobs: 3,
            make_args: vec!["KCFLAGS=-Wno-error".into(), "W=1".into()],
            seed_script: Some("/d/assets/seed.sh".into()),
        }
    }

    #[test]
    fn gcc_with_ccache() {
        let e = env(Compiler::Gcc, None, true);
        let args = e.args(&["bzImage"]);
        assert_eq!(&args[..5], ["-C", "/d/trees/k/src", "O=/d/trees/k/src/.kgym-out", "-j3", "ARCH=i386"]);
        assert!(args.contains(&"CC=/usr/bin/ccache gcc".to_owned()));
        assert!(args.contains(&"gen-randstruct-seed=/d/assets/seed.sh".to_owned()));
        assert!(
            args.contains(&"KCFLAGS=-ffile-prefix-map=/d/trees/k/src/= -ffile-prefix-map=/d/trees/k/src/.kgym-out=. -ffile-prefix-map=../= -Wno-error".to_owned()),
            "{args:?}"
        );
        assert_eq!(args.iter().filter(|a| a.starts_with("KCFLAGS=")).count(), 1);
        assert_eq!(&args[args.len() - 2..], ["W=1", "bzImage"]);
        assert!(!args.iter().any(|a| a.starts_with("LLVM")));
        let envs = e.envs();
        assert!(envs.contains(&("CCACHE_BASEDIR", "/d/trees/k".to_owned())));
        assert!(envs.contains(&("CCACHE_DIR", "/cc".to_owned())));
        assert!(envs.contains(&("KBUILD_BUILD_TIMESTAMP", BUILD_TIMESTAMP.to_owned())));
        assert_eq!(e.required_tools(), ["make", "gcc", "flex", "bison", "bc", "ld", "ar", "nm", "objcopy"]);
    }

    #[test]
    fn clang_and_lld() {
        let e = env(Compiler::Clang, None, false);
        let args = e.args(&[]);
        assert!(args.contains(&"LLVM=1".to_owned()) && args.contains(&"CC=clang".to_owned()));
        let tools = e.required_tools();
        assert_eq!(tools[..2], ["make", "clang"]);
        for t in ["ld.lld", "llvm-ar", "llvm-nm", "llvm-objcopy", "llvm-objdump", "llvm-readelf", "llvm-strip"] {
            assert!(tools.contains(&t), "{t} missing from {tools:?}");
        }
        assert!(!tools.contains(&"ld") && !tools.contains(&"objcopy"), "{tools:?}");
        assert!(!e.envs().iter().any(|(k, _)| k.starts_with("CCACHE")));
        // ccache in front of clang, for the kernel and the host programs.
        let args = env(Compiler::Clang, Some(Linker::Lld), true).args(&[]);
        assert!(args.contains(&"CC=/usr/bin/ccache clang".to_owned()), "{args:?}");
        assert!(args.contains(&"HOSTCC=/usr/bin/ccache clang".to_owned()) && args.contains(&"LLVM=1".to_owned()));
        // clang with GNU ld: no LLVM=1, GNU binutils.
        let e = env(Compiler::Clang, Some(Linker::Ld), false);
        assert!(!e.args(&[]).contains(&"LLVM=1".to_owned()));
        assert!(e.required_tools().contains(&"ld") && !e.required_tools().contains(&"llvm-ar"));
        let e = env(Compiler::Gcc, Some(Linker::Lld), false);
        assert!(e.args(&[]).contains(&"LD=ld.lld".to_owned()));
        assert!(e.required_tools().contains(&"ld.lld") && !e.required_tools().contains(&"ld"));
    }

    #[test]
    fn a_missing_llvm_tool_is_named_up_front() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let e = env(Compiler::Clang, Some(Linker::Lld), false);
        for tool in e.required_tools().into_iter().filter(|t| *t != "llvm-objcopy") {
            let p = dir.path().join(tool);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let err = e.check_tools_in(dir.path().as_os_str()).unwrap_err();
        assert!(matches!(&err, Error::MissingTool { tool } if tool == "llvm-objcopy"), "{err:?}");
        assert_eq!(err.to_string(), "find `llvm-objcopy` on PATH (install it, e.g. with .ci/run)");
        std::fs::copy(dir.path().join("clang"), dir.path().join("llvm-objcopy")).unwrap();
        e.check_tools_in(dir.path().as_os_str()).unwrap();
        // A gcc build needs gcc and GNU binutils, none of which are here.
        let gcc = env(Compiler::Gcc, None, false);
        let err = gcc.check_tools_in(dir.path().as_os_str()).unwrap_err();
        assert!(matches!(&err, Error::MissingTool { tool } if tool == "gcc"), "{err:?}");
    }

    #[test]
    fn parses_compiled_objects_and_first_error() {
        let lines: Vec<String> = [
            "  CC      kernel/sys.o",
            "  CC [M]  fs/foo.o",
            "  CC      scripts/mod/empty.o",
            "  LD      vmlinux",
            "/t/src/kernel/sys.c: In function 'f':",
            "/t/src/kernel/sys.c:10:5: error: expected ';' before '}' token",
            "make[3]: *** [scripts/Makefile.build:250: kernel/sys.o] Error 1",
            "kernel/sys.c:12:1: error: second",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(compiled_objects(&lines), ["kernel/sys.o", "fs/foo.o", "scripts/mod/empty.o"]);
        assert_eq!(first_error(&lines).unwrap(), "/t/src/kernel/sys.c:10:5: error: expected ';' before '}' token");
        assert_eq!(first_error(&lines[..3]), None);
    }
}
