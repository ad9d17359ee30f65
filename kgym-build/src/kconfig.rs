//! The kernel configuration: a full `.config`, or a base target
//! (`tinyconfig`, ...) plus fragments, settled with `olddefconfig`; then a
//! comparison of what was asked with what survived.
//!
//! Fragments are appended to the base `.config` in order: Kconfig reads the
//! last assignment of a symbol, so later fragments win, as with
//! `scripts/kconfig/merge_config.sh`.

use std::collections::HashMap;
use std::path::Path;

use kgym_core::stage::build::{ConfigMismatch, KernelConfig};

use crate::error::{Error, Result};
use crate::log::BuildLog;
use crate::make::MakeEnv;
use crate::process::{self, Limits};

/// The module signing key used when a config signs modules with the
/// kernel's default (randomly generated) key: a fixed key keeps builds
/// reproducible. It is a test-only key, never a secret.
pub(crate) const SIGNING_KEY: &str = include_str!("../assets/signing_key.pem");

/// Where [`SIGNING_KEY`] is put, relative to the build directory (kbuild
/// resolves `CONFIG_MODULE_SIG_KEY` there).
pub(crate) const SIGNING_KEY_PATH: &str = "kgym-signing-key.pem";

/// `(symbol without CONFIG_, value)` for every assignment in a config text;
/// `# CONFIG_X is not set` reads as `n`. Values keep their quotes.
pub(crate) fn parse_assignments(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# CONFIG_") {
                let sym = rest.strip_suffix(" is not set")?;
                return Some((sym.to_owned(), "n".to_owned()));
            }
            let (sym, value) = line.strip_prefix("CONFIG_")?.split_once('=')?;
            Some((sym.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// The symbols a request asks for, the last assignment of each winning, in
/// order of first appearance.
pub(crate) fn requested(config: &KernelConfig) -> Vec<(String, String)> {
    let text = match config {
        KernelConfig::Full { text } => text.clone(),
        KernelConfig::Base { fragments, .. } => fragments.join("\n"),
    };
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    for (sym, value) in parse_assignments(&text) {
        if values.insert(sym.clone(), value).is_none() {
            order.push(sym);
        }
    }
    order
        .into_iter()
        .map(|s| {
            let v = values.remove(&s).unwrap_or_default();
            (s, v)
        })
        .collect()
}

/// The requested symbols whose final value differs. A request for `n` is
/// met by an absent symbol.
pub(crate) fn mismatches(requested: &[(String, String)], final_text: &str) -> Vec<ConfigMismatch> {
    let actual: HashMap<String, String> = parse_assignments(final_text).into_iter().collect();
    requested
        .iter()
        .filter_map(|(sym, want)| {
            let got = actual.get(sym);
            let ok = match got {
                Some(v) => v == want,
                None => want == "n",
            };
            (!ok).then(|| ConfigMismatch { symbol: sym.clone(), requested: want.clone(), actual: got.cloned() })
        })
        .collect()
}

async fn make_config(make: &MakeEnv, target: &str, limits: &Limits, log: &BuildLog) -> Result<()> {
    let done = make.run(&[target], limits, log).await?;
    if done.status.success() {
        Ok(())
    } else {
        Err(Error::ConfigFailed {
            target: target.to_owned(),
            status: process::describe(&done.status),
            tail: done.tail(30),
        })
    }
}

async fn append(path: &Path, text: &str) -> Result<()> {
    let mut current = tokio::fs::read_to_string(path).await.map_err(|e| Error::io(path, e))?;
    if !current.ends_with('\n') {
        current.push('\n');
    }
    current.push_str(text);
    current.push('\n');
    tokio::fs::write(path, current).await.map_err(|e| Error::io(path, e))
}

/// Writes the final `.config` into the build directory and returns the
/// requested symbols that did not survive.
pub(crate) async fn generate(
    make: &MakeEnv,
    config: &KernelConfig,
    limits: &Limits,
    log: &BuildLog,
) -> Result<Vec<ConfigMismatch>> {
    let dot_config = make.out.join(".config");
    tokio::fs::create_dir_all(&make.out).await.map_err(|e| Error::io(&make.out, e))?;
    match config {
        KernelConfig::Full { text } => {
            tokio::fs::write(&dot_config, text).await.map_err(|e| Error::io(&dot_config, e))?;
        }
        KernelConfig::Base { base, fragments } => {
            make_config(make, base.target(), limits, log).await?;
            if !fragments.is_empty() {
                append(&dot_config, &fragments.join("\n")).await?;
            }
        }
    }
    make_config(make, "olddefconfig", limits, log).await?;

    let want = requested(config);
    let settled = tokio::fs::read_to_string(&dot_config).await.map_err(|e| Error::io(&dot_config, e))?;
    if needs_fixed_signing_key(&settled, &want) {
        log.step("pinning the module signing key (reproducible builds)");
        let key = make.out.join(SIGNING_KEY_PATH);
        tokio::fs::write(&key, SIGNING_KEY).await.map_err(|e| Error::io(&key, e))?;
        append(&dot_config, &format!("CONFIG_MODULE_SIG_KEY=\"{SIGNING_KEY_PATH}\"")).await?;
        make_config(make, "olddefconfig", limits, log).await?;
    }
    let settled = tokio::fs::read_to_string(&dot_config).await.map_err(|e| Error::io(&dot_config, e))?;
    Ok(mismatches(&want, &settled))
}

/// Module signing with the kernel's default key path means a random key per
/// build, unless the request chose a key itself.
fn needs_fixed_signing_key(settled: &str, requested: &[(String, String)]) -> bool {
    let values: HashMap<String, String> = parse_assignments(settled).into_iter().collect();
    values.get("MODULE_SIG").is_some_and(|v| v == "y")
        && values.get("MODULE_SIG_KEY").is_some_and(|v| v == "\"certs/signing_key.pem\"")
        && !requested.iter().any(|(s, _)| s == "MODULE_SIG_KEY")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kgym_core::stage::build::BaseConfig;

    #[test]
    fn parses_requests_last_wins_and_finds_mismatches() {
        let cfg = KernelConfig::Base {
            base: BaseConfig::Tinyconfig,
            fragments: vec![
                "CONFIG_KASAN=y\n# CONFIG_SMP is not set\nCONFIG_NR_CPUS=4\n# comment".into(),
                "CONFIG_NR_CPUS=8\nCONFIG_NOPE=y\nCONFIG_CMDLINE=\"console=ttyS0\"\n# CONFIG_GONE is not set".into(),
            ],
        };
        let want = requested(&cfg);
        assert_eq!(
            want,
            vec![
                ("KASAN".into(), "y".into()),
                ("SMP".into(), "n".into()),
                ("NR_CPUS".into(), "8".into()),
                ("NOPE".into(), "y".into()),
                ("CMDLINE".into(), "\"console=ttyS0\"".into()),
                ("GONE".into(), "n".into()),
            ]
        );
        let settled = "CONFIG_KASAN=y\n# CONFIG_SMP is not set\nCONFIG_NR_CPUS=64\nCONFIG_CMDLINE=\"console=ttyS0\"\n";
        let m = mismatches(&want, settled);
        assert_eq!(
            m,
            vec![
                ConfigMismatch { symbol: "NR_CPUS".into(), requested: "8".into(), actual: Some("64".into()) },
                ConfigMismatch { symbol: "NOPE".into(), requested: "y".into(), actual: None },
            ]
        );
    }

    #[test]
    fn signing_key_pinned_only_for_the_default_key() {
        let default = "CONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_KEY=\"certs/signing_key.pem\"\n";
        assert!(needs_fixed_signing_key(default, &[]));
        assert!(!needs_fixed_signing_key(default, &[("MODULE_SIG_KEY".into(), "\"/k.pem\"".into())]));
        assert!(!needs_fixed_signing_key("# CONFIG_MODULE_SIG is not set\n", &[]));
        assert!(SIGNING_KEY.contains("BEGIN PRIVATE KEY") && SIGNING_KEY.contains("BEGIN CERTIFICATE"));
    }
}
