//! The `build` stage: build a kernel at a commit/config/patch.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::artifact::ArtifactKey;
use crate::stage::StageArgs;

/// Where the kernel source comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KernelSource {
    /// A git repository (any URL git accepts, including `file://` and a
    /// local path) at a commit (full or abbreviated hash, or a ref name).
    Git {
        /// The repository URL or path.
        url: String,
        /// The commit to build.
        commit: String,
    },
    /// A source tarball (e.g. Debian's `/usr/src/linux-source-6.1.tar.xz`).
    Tarball {
        /// The tarball's path on the builder.
        path: PathBuf,
    },
}

impl KernelSource {
    /// A git source.
    pub fn git(url: impl Into<String>, commit: impl Into<String>) -> Self {
        Self::Git { url: url.into(), commit: commit.into() }
    }

    /// A tarball source.
    pub fn tarball(path: impl Into<PathBuf>) -> Self {
        Self::Tarball { path: path.into() }
    }
}

/// A make target that produces a base config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseConfig {
    /// `make tinyconfig`.
    Tinyconfig,
    /// `make defconfig`.
    Defconfig,
    /// `make allnoconfig`.
    Allnoconfig,
}

impl BaseConfig {
    /// The make target.
    pub fn target(self) -> &'static str {
        match self {
            Self::Tinyconfig => "tinyconfig",
            Self::Defconfig => "defconfig",
            Self::Allnoconfig => "allnoconfig",
        }
    }
}

/// The kernel configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KernelConfig {
    /// A full `.config` (kGym's `kernel-config`).
    Full {
        /// The `.config` text.
        text: String,
    },
    /// A base target plus fragments (`CONFIG_X=y` / `# CONFIG_X is not set`
    /// lines) applied in order.
    Base {
        /// The base target.
        base: BaseConfig,
        /// Fragment texts.
        #[serde(default)]
        fragments: Vec<String>,
    },
}

/// A build-fix commit cherry-picked when the checkout lacks it (kGym's
/// backport list).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backport {
    /// The fix commit.
    pub fix_hash: String,
    /// The fix's title (its presence by title also counts as "has the fix").
    pub fix_title: String,
    /// Only apply when this commit is an ancestor of the checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guilty_hash: Option<String>,
    /// Resolve conflicts in favour of the fix instead of failing.
    #[serde(default)]
    pub force_merge: bool,
}

/// Target architecture.
///
/// `#[non_exhaustive]`: more architectures are expected (arm64, riscv64).
/// A runner converts an `Arch` once into the set it supports and refuses
/// the others with a typed error, rather than matching it everywhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Arch {
    /// 64-bit x86 (kGym's `amd64`).
    #[default]
    #[serde(rename = "x86_64", alias = "amd64")]
    X86_64,
    /// 32-bit x86 (kGym's `386`).
    #[serde(rename = "i386", alias = "386")]
    I386,
}

impl Arch {
    /// The kernel's `ARCH=` value.
    pub fn make_arch(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::I386 => "i386",
        }
    }

    /// The name used in artifacts and results.
    pub fn as_str(self) -> &'static str {
        self.make_arch()
    }

    /// syzkaller's (and kGym's) name: `amd64`, `386`.
    ///
    /// ```
    /// use kgym_core::stage::build::Arch;
    /// assert_eq!(Arch::I386.syz_name(), "386");
    /// assert_eq!(Arch::from_name(Arch::X86_64.syz_name()), Some(Arch::X86_64));
    /// ```
    pub fn syz_name(self) -> &'static str {
        match self {
            Self::X86_64 => "amd64",
            Self::I386 => "386",
        }
    }

    /// The arch named `name`: the kernel's name (`x86_64`, `i386`) or
    /// kGym's/syzbot's (`amd64`, `386`); `None` for any other.
    ///
    /// ```
    /// use kgym_core::stage::build::Arch;
    /// assert_eq!(Arch::from_name("386"), Some(Arch::I386));
    /// assert_eq!(Arch::from_name("amd64"), Some(Arch::X86_64));
    /// assert_eq!(Arch::from_name("arm64"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "x86_64" | "amd64" => Some(Self::X86_64),
            "i386" | "386" => Some(Self::I386),
            _ => None,
        }
    }
}

/// The C compiler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compiler {
    /// GCC.
    #[default]
    Gcc,
    /// Clang (built with `LLVM=1` when the linker is lld).
    Clang,
}

/// The linker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Linker {
    /// GNU ld.
    #[serde(rename = "ld")]
    Ld,
    /// LLVM lld.
    #[serde(rename = "ld.lld", alias = "lld")]
    Lld,
}

/// The argument of a `build` stage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BuildArgs {
    /// Where the source comes from.
    pub source: KernelSource,
    /// The configuration.
    pub config: KernelConfig,
    /// A unified diff applied to the checkout (`git apply`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Build fixes applied where needed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backports: Vec<Backport>,
    /// Target architecture.
    #[serde(default)]
    pub arch: Arch,
    /// C compiler.
    #[serde(default)]
    pub compiler: Compiler,
    /// Linker (default: the compiler's usual one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linker: Option<Linker>,
    /// Extra `make` arguments (`KCFLAGS=...`, `W=1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub make_args: Vec<String>,
    /// Fail when a requested config symbol does not survive into the final
    /// config (otherwise: a warning in the result).
    #[serde(default)]
    pub strict_config: bool,
    /// Also produce `compile_commands.json`.
    #[serde(default)]
    pub compile_commands: bool,
    /// Kernel command line recorded with the build (kGym's `kernel-cmdline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Time limit for the whole build (default: the builder's).
    #[serde(default, with = "crate::duration::serde_human_opt", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Share one warm tree across commits of a git source: builds with the
    /// same lineage name (and the same everything but the commit) reuse one
    /// tree that checks out each new commit in place, so `make` rebuilds only
    /// what changed (bisection). `None`: the tree is keyed by the commit too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_lineage: Option<String>,
}

impl BuildArgs {
    /// A build of `source` with `config` and every other field at its default.
    pub fn new(source: KernelSource, config: KernelConfig) -> Self {
        Self {
            source,
            config,
            patch: None,
            backports: Vec::new(),
            arch: Arch::default(),
            compiler: Compiler::default(),
            linker: None,
            make_args: Vec::new(),
            strict_config: false,
            compile_commands: false,
            cmdline: None,
            timeout: None,
            warm_lineage: None,
        }
    }

    /// Sets the patch (builder style).
    pub fn with_patch(mut self, patch: impl Into<String>) -> Self {
        self.patch = Some(patch.into());
        self
    }
}

impl StageArgs for BuildArgs {
    const KIND: &'static str = "build";
    type Output = BuildResult;

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.source {
            KernelSource::Git { url, commit } => {
                if url.trim().is_empty() {
                    problems.push("source.url is empty".to_owned());
                }
                if commit.trim().is_empty() {
                    problems.push("source.commit is empty".to_owned());
                }
            }
            KernelSource::Tarball { path } => {
                if path.as_os_str().is_empty() {
                    problems.push("source.path is empty".to_owned());
                }
            }
        }
        if let KernelConfig::Full { text } = &self.config
            && text.trim().is_empty()
        {
            problems.push("config.text is empty".to_owned());
        }
        if let Some(p) = &self.patch
            && p.trim().is_empty()
        {
            problems.push("patch is empty (omit it instead)".to_owned());
        }
        if let Some(lineage) = &self.warm_lineage {
            if lineage.trim().is_empty() {
                problems.push("warm_lineage is empty (omit it instead)".to_owned());
            }
            if matches!(self.source, KernelSource::Tarball { .. }) {
                problems.push("warm_lineage needs a git source (a tarball has one commit only)".to_owned());
            }
        }
        problems
    }
}

/// Whether a build reused a warm tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CacheStatus {
    /// A warm build tree for the same source/commit/config/toolchain existed.
    Hit,
    /// Built from a fresh tree.
    Miss,
}

/// Seconds spent per build phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildTimings {
    /// Fetch + checkout (or tarball extraction) + backports + patch.
    pub checkout_secs: f64,
    /// Config generation and `olddefconfig`.
    pub config_secs: f64,
    /// `make`.
    pub compile_secs: f64,
    /// Wall time of the whole build.
    pub total_secs: f64,
}

/// A requested config symbol that did not end up as requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigMismatch {
    /// The symbol, without `CONFIG_`.
    pub symbol: String,
    /// The requested value (`y`, `m`, `n`, a string or number).
    pub requested: String,
    /// The final value; `None` when the symbol is absent (unknown, or its
    /// dependencies are off).
    pub actual: Option<String>,
}

/// The result of a `build` stage: artifact keys plus facts about the build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildResult {
    /// `arch/x86/boot/bzImage`.
    pub bzimage: ArtifactKey,
    /// `vmlinux` (for symbolization).
    pub vmlinux: ArtifactKey,
    /// The final `.config`.
    pub config: ArtifactKey,
    /// The full build log.
    pub log: ArtifactKey,
    /// `compile_commands.json`, when requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_commands: Option<ArtifactKey>,
    /// The resolved commit hash (git sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The architecture built.
    pub arch: Arch,
    /// The kernel command line the build was requested with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Phase timings.
    pub timings: BuildTimings,
    /// Warm-tree reuse.
    pub cache: CacheStatus,
    /// Requested config symbols that did not survive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_mismatches: Vec<ConfigMismatch>,
    /// Backports that were applied (fix hashes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backports_applied: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_json_gets_defaults_and_kgym_arch_names_parse() {
        let args: BuildArgs = serde_json::from_value(serde_json::json!({
            "source": {"type": "git", "url": "file:///r", "commit": "abc"},
            "config": {"type": "base", "base": "tinyconfig", "fragments": ["CONFIG_X=y"]},
            "arch": "amd64",
            "timeout": "30m"
        }))
        .unwrap();
        assert_eq!(args.arch, Arch::X86_64);
        assert_eq!(args.compiler, Compiler::Gcc);
        assert_eq!(args.timeout, Some(Duration::from_secs(1800)));
        assert!(args.check().is_empty());
        let back: BuildArgs = serde_json::from_value(serde_json::to_value(&args).unwrap()).unwrap();
        assert_eq!(back, args);
        let i386: Arch = serde_json::from_str("\"386\"").unwrap();
        assert_eq!(i386, Arch::I386);
        let lld: Linker = serde_json::from_str("\"ld.lld\"").unwrap();
        assert_eq!(lld, Linker::Lld);
    }

    #[test]
    fn a_warm_lineage_needs_a_git_source_and_a_name() {
        let config = KernelConfig::Full { text: "CONFIG_X=y".into() };
        let mut git = BuildArgs::new(KernelSource::git("file:///r", "abc"), config.clone());
        assert!(!serde_json::to_value(&git).unwrap().as_object().unwrap().contains_key("warm_lineage"));
        git.warm_lineage = Some("bisect".into());
        assert!(git.check().is_empty(), "{:?}", git.check());
        git.warm_lineage = Some(" ".into());
        assert_eq!(git.check().len(), 1, "{:?}", git.check());
        let mut tarball = BuildArgs::new(KernelSource::tarball("/l.tar.xz"), config);
        tarball.warm_lineage = Some("bisect".into());
        assert!(tarball.check()[0].contains("git source"), "{:?}", tarball.check());
    }

    #[test]
    fn check_lists_every_problem() {
        let mut args = BuildArgs::new(KernelSource::git("", " "), KernelConfig::Full { text: String::new() });
        args.patch = Some("\n".into());
        assert_eq!(args.check().len(), 4, "{:?}", args.check());
    }
}
