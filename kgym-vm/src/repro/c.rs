//! C reproducers: compiled statically with the host compiler and
//! `-pthread`, as syzbot's C reproducers expect.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kgym_core::stage::build::Arch;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::process;

/// How long one compilation may take.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(180);

/// The compiler arguments for `source` → `output`.
pub fn compile_args(arch: Arch, source: &Path, output: &Path) -> Vec<String> {
    let mut a = vec!["-O2".to_owned(), "-pthread".to_owned(), "-static".to_owned()];
    if arch == Arch::I386 {
        a.push("-m32".to_owned());
    }
    a.extend(["-o".to_owned(), output.display().to_string(), source.display().to_string()]);
    a
}

/// Compiles `text` in `dir` with `cc`; returns the binary. A compiler
/// failure is [`Error::ReproducerDoesNotCompile`] with its whole output.
pub async fn compile(cc: &Path, text: &str, arch: Arch, dir: &Path, cancel: &CancellationToken) -> Result<PathBuf> {
    let source = dir.join("repro.c");
    let output = dir.join("repro");
    tokio::fs::write(&source, text).await.map_err(Error::io(&source))?;
    let mut cmd = process::command(cc);
    cmd.args(compile_args(arch, &source, &output)).current_dir(dir);
    let program = cc.display().to_string();
    let out = process::run_captured(cmd, &program, COMPILE_TIMEOUT, cancel).await?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stdout));
        return Err(Error::ReproducerDoesNotCompile { compiler: program, status: out.status.to_string(), output });
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i386_gets_m32() {
        let a = compile_args(Arch::I386, Path::new("r.c"), Path::new("r"));
        assert!(a.contains(&"-m32".to_owned()) && a.contains(&"-static".to_owned()));
        let b = compile_args(Arch::X86_64, Path::new("r.c"), Path::new("r"));
        assert!(!b.contains(&"-m32".to_owned()) && b.contains(&"-pthread".to_owned()));
    }

    #[tokio::test]
    async fn compile_errors_are_typed_and_carry_the_output() {
        let Some(gcc) = kgym_testkit::require_tool("gcc") else { return };
        let dir = tempfile::tempdir().unwrap();
        let err = compile(
            &gcc,
            "int main(void) { return undefined_thing; }\n",
            Arch::X86_64,
            dir.path(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        match err {
            Error::ReproducerDoesNotCompile { output, status, .. } => {
                assert!(output.contains("undefined_thing"), "{output}");
                assert!(status.contains('1'), "{status}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn good_programs_become_static_binaries() {
        let Some(gcc) = kgym_testkit::require_tool("gcc") else { return };
        let dir = tempfile::tempdir().unwrap();
        let bin = compile(
            &gcc,
            "#include <pthread.h>\nint main(void) { return 0; }\n",
            Arch::X86_64,
            dir.path(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        let elf = std::fs::read(&bin).unwrap();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert!(!crate::initramfs::is_dynamic_elf(&elf), "not static");
    }
}
