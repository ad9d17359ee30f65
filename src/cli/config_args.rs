//! The kernel configuration options `kgym build` and `kgym bisect` share:
//! `--config FILE`, or `--base TARGET` with `--fragment FILE`s on top.

use std::path::{Path, PathBuf};

use kgym::core::stage::build::{BaseConfig, KernelConfig};

/// How the kernel is configured: a full `.config`, or a base target and
/// fragments (one of `--config` and `--base` is required).
#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("configuration").required(true).args(["config", "base"])))]
pub struct ConfigArgs {
    /// A full .config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A base config target instead of --config.
    #[arg(long, value_enum)]
    pub base: Option<BaseArg>,
    /// Config fragment files applied on top of --base, in order.
    #[arg(long, requires = "base")]
    pub fragment: Vec<PathBuf>,
}

/// `--base` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BaseArg {
    /// make tinyconfig
    Tinyconfig,
    /// make defconfig
    Defconfig,
    /// make allnoconfig
    Allnoconfig,
}

impl From<BaseArg> for BaseConfig {
    fn from(base: BaseArg) -> Self {
        match base {
            BaseArg::Tinyconfig => BaseConfig::Tinyconfig,
            BaseArg::Defconfig => BaseConfig::Defconfig,
            BaseArg::Allnoconfig => BaseConfig::Allnoconfig,
        }
    }
}

impl ConfigArgs {
    /// The configuration, its files read with `read(what, path)` (`what`
    /// is "config" or "config fragment", for the caller's error).
    pub fn kernel_config<E>(
        &self,
        mut read: impl FnMut(&'static str, &Path) -> Result<String, E>,
    ) -> Result<KernelConfig, E> {
        Ok(match &self.config {
            Some(path) => KernelConfig::Full { text: read("config", path)? },
            None => KernelConfig::Base {
                base: self.base.unwrap_or(BaseArg::Tinyconfig).into(),
                fragments: self.fragment.iter().map(|f| read("config fragment", f)).collect::<Result<_, _>>()?,
            },
        })
    }
}
