//! C reproducers: compiled statically with the host compiler and
//! `-pthread`, as syzbot's C reproducers expect.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kgym_core::stage::build::Arch;
use tokio_util::sync::CancellationToken;

use crate::elf;
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
    let mut cmd = process::tree_command(cc);
    cmd.args(compile_args(arch, &source, &output)).current_dir(dir);
    let program = cc.display().to_string();
    let out = process::run_captured(cmd, &program, COMPILE_TIMEOUT, cancel).await?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stdout));
        return Err(Error::ReproducerDoesNotCompile { compiler: program, status: out.status.to_string(), output });
    }
    check_binary(arch, &output)?;
    Ok(output)
}

/// Checks that the compiler made a static binary of the guest's arch (a
/// compiler without `-m32` support, or a cross compiler, would not).
fn check_binary(arch: Arch, binary: &Path) -> Result<()> {
    match elf::unfit_for(binary, arch).map_err(Error::io(binary))? {
        None => Ok(()),
        Some(unfit) => Err(Error::GuestBinaryArch {
            what: "the C reproducer".into(),
            path: binary.to_owned(),
            found: unfit.describe(),
            guest: arch,
            need: format!(
                "an {} guest needs a static {} binary: the compiler must honour {} (for -m32: apt-get install \
                 gcc-multilib)",
                arch.as_str(),
                if arch == Arch::I386 { "32-bit" } else { "64-bit" },
                compile_args(arch, Path::new("repro.c"), Path::new("repro"))[..].join(" "),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::ElfInfo;

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
        assert!(!elf::is_dynamic(&elf), "not static");
    }

    #[tokio::test]
    async fn i386_programs_become_static_32_bit_binaries() {
        let Some(gcc) = kgym_testkit::require_tool("gcc") else { return };
        let dir = tempfile::tempdir().unwrap();
        let src = "#include <pthread.h>\n#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n";
        let bin = compile(&gcc, src, Arch::I386, dir.path(), &CancellationToken::new()).await.unwrap();
        let info = ElfInfo::read(&bin).unwrap().unwrap();
        assert_eq!(info.arch(), Some(Arch::I386), "{info:?}");
        assert!(!info.dynamic);
        // It runs on this host when it has IA-32 emulation, as it will in the guest.
        match std::process::Command::new(&bin).output() {
            Ok(out) => assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n"),
            Err(e) => eprintln!("this host cannot run i386 binaries ({e}); not running it"),
        }
    }

    #[test]
    fn a_binary_of_the_wrong_arch_is_a_typed_error() {
        use crate::elf::{EM_X86_64, fake::elf};
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("repro");
        std::fs::write(&bin, elf(true, EM_X86_64, false)).unwrap();
        check_binary(Arch::X86_64, &bin).unwrap();
        let err = check_binary(Arch::I386, &bin).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::GuestBinaryArch { guest: Arch::I386, .. }));
        assert!(msg.contains("is an x86_64 binary; an i386 guest needs a static 32-bit binary"), "{msg}");
        assert!(msg.contains("-m32"), "{msg}");
    }
}
