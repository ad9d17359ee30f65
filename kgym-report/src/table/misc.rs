//! Every other crash message: faults and traps, panics, `kernel BUG at`,
//! UBSAN, arm faults, reboots, and the messages of syzkaller's own tools
//! and of Go programs.

use super::{F, Oops, Pick, RIP, f, line, res, rip_then_trace, stack, trace};

fn oops(header: &'static str, formats: Vec<F>, suppressions: &[&str]) -> Oops {
    Oops { header, formats: formats.into_iter().map(F::done).collect(), suppressions: res(suppressions) }
}

/// A fault whose title names the function at the faulting RIP.
fn rip_only(title: &str, fmt: &'static str) -> F {
    f(title, fmt).stack(stack(vec![line(RIP)], &[]))
}

pub(super) fn oopses() -> Vec<Oops> {
    vec![
        oops(
            "Unable to handle kernel",
            vec![
                f(
                    "Unable to handle kernel (paging request|NULL pointer dereference|access to user memory)",
                    "BUG: unable to handle kernel {1} in {2}",
                )
                .alt(&["bad-access in {2}"])
                .stack(rip_then_trace(&[])),
            ],
            &[],
        ),
        oops(
            "general protection fault",
            vec![
                f("general protection fault.*:", "general protection fault in {1}")
                    .alt(&["bad-access in {1}"])
                    .stack(rip_then_trace(&[])),
            ],
            // A user-space segfault line, not a kernel fault.
            &[r"general protection fault .* error:\d+ in "],
        ),
        oops(
            "stack segment: ",
            vec![f("stack segment: ", "stack segment fault in {1}").stack(rip_then_trace(&[]))],
            &[],
        ),
        oops(
            "Kernel panic",
            vec![
                // With a corrupted stack the kernel may fail to name the
                // function or to unwind.
                f("Kernel panic - not syncing: stack-protector:", "kernel panic: stack is corrupted in {1}")
                    .report("Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: %FUNC%")
                    .no_trace(),
                f("Kernel panic - not syncing: stack-protector:", "kernel panic: stack is corrupted in {1}")
                    .report("Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: [a-f0-9]+")
                    .stack(trace(&["stack_chk"])),
                f("Kernel panic - not syncing: corrupted stack end", "kernel panic: corrupted stack end in {1}")
                    .report("Kernel panic - not syncing: corrupted stack end detected inside scheduler")
                    .alt(&["stack-overflow in {1}"])
                    .stack(trace(&["schedule", "retint_kernel"]).pick(Pick::Stall)),
                f("Kernel panic - not syncing: kernel stack overflow", "kernel stack overflow in {1}")
                    .alt(&["stack-overflow in {1}"])
                    .stack(trace(&["bad_stack"]).pick(Pick::Stall)),
                f("Kernel panic - not syncing: Attempted to kill init!", "kernel panic: Attempted to kill init!"),
                f(
                    "Kernel panic - not syncing: Couldn't open N_TTY ldisc for [^ ]+ --- error -[0-9]+",
                    "kernel panic: Couldn't open N_TTY ldisc",
                ),
                // These panics follow another report (BUG, WARNING, KASAN,
                // hung task): seen as the title, the real header was lost.
                f("Kernel panic - not syncing: Fatal exception", "kernel panic: Fatal exception").corrupted(),
                f("Kernel panic - not syncing: panic_on_warn set", "kernel panic: panic_on_warn set").corrupted(),
                f("Kernel panic - not syncing: hung_task: blocked tasks", "kernel panic: hung_task: blocked tasks")
                    .corrupted(),
                f("Kernel panic - not syncing: (.*)", "kernel panic: {1}"),
            ],
            &[],
        ),
        oops("PANIC: double fault", vec![rip_only("PANIC: double fault", "PANIC: double fault in {1}")], &[]),
        oops(
            "rust_kernel: panicked",
            vec![
                f("rust_kernel: panicked", "{1} in {2}")
                    .report("rust_kernel: panicked at [^\n]*?\n(.+?)\n")
                    .stack(trace(&[r"__rustc::rust_begin_unwind"])),
            ],
            &[],
        ),
        oops(
            "kernel BUG",
            vec![
                f("kernel BUG at mm/usercopy.c", "BUG: bad usercopy in {1}").stack(trace(&["usercopy", "__check"])),
                f("kernel BUG at lib/list_debug.c", "BUG: corrupted list in {1}")
                    // Often a symptom of memory corruption or a race.
                    .alt(&["bad-access in {1}"])
                    .stack(trace(&[])),
                // skb helpers are full of BUG_ON; the bug is in their caller.
                f("kernel BUG at (.*)", "kernel BUG in {2}").stack(rip_then_trace(&["^skb_"])),
            ],
            &[],
        ),
        oops("Kernel BUG", vec![f("Kernel BUG (.*)", "kernel BUG {1}")], &[]),
        oops("BUG kmalloc-", vec![f("BUG kmalloc-.*: Object already free", "BUG: Object already free")], &[]),
        oops("divide error:", vec![rip_only("divide error: ", "divide error in {1}")], &[]),
        // A misspelling that some kernels print.
        oops("divide_error:", vec![rip_only("divide_error: ", "divide error in {1}")], &[]),
        oops("invalid opcode:", vec![rip_only("invalid opcode: ", "invalid opcode in {1}")], &[]),
        oops("int3:", vec![f("int3: ", "int3 in {1}").stack(rip_then_trace(&[]))], &[]),
        oops(
            "UBSAN:",
            vec![
                f("UBSAN:", "UBSAN: undefined-behaviour in {1}")
                    .report("UBSAN: Undefined behaviour in")
                    .stack(trace(&["ubsan", "overflow"])),
                f("UBSAN: array-index-out-of-bounds in", "UBSAN: array-index-out-of-bounds in {1}")
                    .alt(&["bad-access in {1}"])
                    .stack(trace(&["ubsan", "overflow"])),
                f("UBSAN:", "UBSAN: {1} in {2}").report("UBSAN: (.*?) in").stack(trace(&["ubsan", "overflow"])),
            ],
            &[],
        ),
        oops(
            "Booting the kernel.",
            vec![f("^Booting the kernel", "unexpected kernel reboot").no_trace()],
            // Boot messages echoed back by the kernel (e.g. as a bad mount
            // option) are not a reboot.
            &["Parsing ELF|Decompressing Linux|Unknown parameter '"],
        ),
        oops(
            "unregister_netdevice: waiting for",
            vec![
                f(
                    "unregister_netdevice: waiting for (?:.*) to become free",
                    "unregister_netdevice: waiting for DEV to become free",
                )
                .no_trace(),
            ],
            &[],
        ),
        oops(
            "VFS: Close: file count is 0",
            vec![f("VFS: Close: file count is 0", "VFS: Close: file count is zero (use-after-free)").no_trace()],
            &[],
        ),
        oops(
            "VFS: Busy inodes after unmount",
            vec![f("VFS: Busy inodes after unmount", "VFS: Busy inodes after unmount (use-after-free)").no_trace()],
            &[],
        ),
        // arm64 calls some faults "Internal error", arm "Unable to handle
        // kernel paging request": the alt title merges them.
        oops(
            "Internal error:",
            vec![f("Internal error:", "Internal error in {1}").alt(&["bad-access in {1}"]).stack(rip_then_trace(&[]))],
            &[],
        ),
        oops(
            "Unhandled fault:",
            vec![
                f("Unhandled fault:", "Unhandled fault in {1}").alt(&["bad-access in {1}"]).stack(rip_then_trace(&[])),
            ],
            &[],
        ),
        oops("Alignment trap:", vec![f("Alignment trap:", "Alignment trap in {1}").stack(rip_then_trace(&[]))], &[]),
        oops(
            "trusty: panic",
            vec![
                f("trusty: panic.* ASSERT FAILED", "trusty: ASSERT FAILED: {1}")
                    .report(r"trusty: panic \(.*?\):(?: DEBUG)? ASSERT FAILED at \(.*?\): (.+)")
                    .no_trace(),
                f("trusty: panic.* ASSERT FAILED.*: *(.*)", "trusty: ASSERT FAILED: {1}").corrupted(),
                f("trusty: panic", "trusty: panic: {1}").report(r"trusty: panic \(.*?\): (.+)").no_trace(),
            ],
            &[],
        ),
        oops(
            "fatal error:",
            vec![f("fatal error:", "go runtime error").no_trace()],
            &["ALSA", "fatal error: cannot create timer"],
        ),
        // Messages of syzkaller's executor and tools.
        oops("SYZFAIL:", vec![f("SYZFAIL:(.*)", "SYZFAIL:{1}").no_trace()], &[]),
        oops("SYZFATAL:", vec![f("SYZFATAL:(.*)()", "SYZFATAL:{1}").alt(&["SYZFATAL{2}"]).no_trace()], &[]),
        oops(
            "panic:",
            vec![
                f("panic: Sentry detected .* stuck task", "panic: Sentry detected stuck tasks").no_trace(),
                f("panic:(.*)", "panic:{1}").no_trace(),
            ],
            &[
                // Kernel functions like skb_panic.
                "_panic:",
                // Android boot noise.
                "xlog_status:",
                r"ddb\.onpanic:",
                "evtlog_status:",
            ],
        ),
    ]
}
