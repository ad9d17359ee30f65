//! The test kit's plain-make kernels: a minimal kernel and a patched
//! variant built incrementally on its tree, both cached.

use kgym_testkit::{Arch, Compiler, minimal_kernel, minimal_kernel_spec, test_kernel_available};

/// Adds a string to the kernel image.
const MARKER_PATCH: &str = "diff --git a/kernel/sys.c b/kernel/sys.c
--- a/kernel/sys.c
+++ b/kernel/sys.c
@@ -953,4 +953,6 @@
 \treturn task_tgid_vnr(current);
 }
 
+static const char kgym_marker[] __used = \"kgym-testkit-marker\";
+
 /* Thread ID - the internal kernel \"pid\" */
";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_minimal_kernel_and_a_patched_variant() {
    if !test_kernel_available() {
        return;
    }
    let base = minimal_kernel(Arch::X86_64, Compiler::Gcc).await;
    let image = std::fs::read(&base.bzimage).unwrap();
    assert_eq!(&image[0x202..0x206], b"HdrS", "not a bzImage");
    let config = std::fs::read_to_string(&base.config).unwrap();
    for want in ["CONFIG_64BIT=y", "CONFIG_SERIAL_8250_CONSOLE=y", "CONFIG_CC_IS_GCC=y"] {
        assert!(config.lines().any(|l| l == want), "{want} missing from the config");
    }
    let base_vmlinux = std::fs::read(&base.vmlinux).unwrap();
    assert!(!contains(&base_vmlinux, "kgym-testkit-marker"));

    let spec = minimal_kernel_spec(Arch::X86_64, Compiler::Gcc);
    let started = std::time::Instant::now();
    let patched = kgym_testkit::kernel::cached_kernel(&spec, Some(MARKER_PATCH)).await;
    eprintln!("patched variant: {:.1}s", started.elapsed().as_secs_f64());
    assert!(contains(&std::fs::read(&patched.vmlinux).unwrap(), "kgym-testkit-marker"));
    assert_ne!(patched.vmlinux, base.vmlinux);
    // The base kernel's files are untouched, and both are cached now.
    assert_eq!(std::fs::read(&base.vmlinux).unwrap(), base_vmlinux);
    assert_eq!(kgym_testkit::kernel::already_built(&spec, Some(MARKER_PATCH)).unwrap().vmlinux, patched.vmlinux);
    assert_eq!(kgym_testkit::kernel::already_built(&spec, None).unwrap().vmlinux, base.vmlinux);
}
