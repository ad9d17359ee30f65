//! `WARNING:` messages: `WARN_ON` splats (titled by the subsystem that
//! warned or by the guilty caller) and lockdep reports.

use super::{CALL_TRACE, F, Oops, Part, RIP, StackRule, f, line, res, stack, trace};

/// A `WARN_ON` splat: the stack starts at the RIP line (x86) or at
/// `--- interrupt:` (powerpc); older kernels just print the call trace.
fn warn_stack(skip: &[&str]) -> StackRule {
    let start = format!("(?:{RIP}|--- interrupt: [0-9]+ at %FUNC%)");
    stack(vec![line(&start), Part::Trace], skip).or(vec![line(CALL_TRACE), Part::Trace])
}

fn all() -> Vec<F> {
    vec![
        f(r"WARNING: .*lib/debugobjects\.c.* (?:debug_print|debug_check|at)", "WARNING: ODEBUG bug in {1}")
            // The users of debug objects are generic too.
            .stack(warn_stack(&[
                "debug_", "rcu", "hrtimer_", "timer_", "work_", "percpu_", "vunmap", "vfree", "__free_", "debug_check",
                "kobject_",
            ])),
        f(r"WARNING: .*mm/usercopy\.c.* (?:usercopy_warn|at)", "WARNING: bad usercopy in {1}")
            .stack(warn_stack(&["usercopy", "__check"])),
        f(r"WARNING: .*lib/kobject\.c.* (?:kobject_|at)", "WARNING: kobject bug in {1}").stack(warn_stack(&["kobject_"])),
        f(r"WARNING: .*fs/proc/generic\.c.* (?:proc_register|at)", "WARNING: proc registration bug in {1}")
            .stack(warn_stack(&["proc_"])),
        f(r"WARNING: .*lib/refcount\.c.* (?:refcount_|at)", "WARNING: refcount bug in {1}")
            .stack(warn_stack(&["refcount", "kobject_"])),
        f(r"WARNING: .*kernel/locking/lockdep\.c.*lock_", "WARNING: locking bug in {1}")
            .stack(warn_stack(&["lock_sock", "release_sock"])),
        f("WARNING: .*still has locks held!", "WARNING: still has locks held in {1}")
            .report(r"WARNING: .*still has locks held!(?:.*\n)+?.*at: %FUNC%"),
        f("WARNING: Nested lock was not taken", "WARNING: nested lock was not taken in {1}").stack(warn_stack(&[])),
        f("WARNING: lock held when returning to user space", "WARNING: lock held when returning to user space in {1}")
            .report(r"WARNING: lock held when returning to user space(?:.*\n)+?.*leaving the kernel with locks still held(?:.*\n)+?.*at: (?:%PC% +)?%FUNC%")
            .no_trace(),
        f(r"WARNING: .*mm/.*\.c.* k?.?malloc", "WARNING: kmalloc bug in {1}")
            .stack(warn_stack(&["kmalloc", "krealloc", "slab", "kmem"])),
        f("WARNING: .*mm/vmalloc.c.*__vmalloc_node", "WARNING: zero-size vmalloc in {1}").stack(warn_stack(&[])),
        f("WARNING: .* usb_submit_urb", "WARNING in {1}/usb_submit_urb").stack(warn_stack(&[
            "usb_submit_urb", "usb_start_wait_urb", "usb_bulk_msg", "usb_interrupt_msg", "usb_control_msg",
        ])),
        // The splat format of kernels from late 2025 on.
        f(r"WARNING: %SRC% at 0x\d+, CPU#\d+", "WARNING in {2}").stack(warn_stack(&[])),
        f("WARNING: .* at %SRC% %FUNC%", "WARNING in {3}").stack(warn_stack(&[])),
        f("WARNING: %SRC% at %FUNC%", "WARNING in {3}").stack(warn_stack(&[])),
        f(r"WARNING: \[.*\] %SRC% at %FUNC%.*", "WARNING in {3}").stack(warn_stack(&[])),
        f("WARNING: possible circular locking dependency detected", "possible deadlock in {1}")
            .report(r"WARNING: possible circular locking dependency detected(?:.*\n)+?.*is trying to acquire lock")
            .stack(stack(
                vec![line("at: (?:%PC% +)?%FUNC%"), line("at: (?:%PC% +)?%FUNC%"), Part::Trace],
                // Deadlocks seen in these take locks of work items: they are
                // about the work item, not the workqueue code.
                &["process_one_work", "flush_workqueue", "drain_workqueue", "destroy_workqueue"],
            )),
        f("WARNING: possible irq lock inversion dependency detected", "possible deadlock in {1}")
            .report(r"WARNING: possible irq lock inversion dependency detected(?:.*\n)+?.*just changed the state of lock(?:.*\n)+?.*at: (?:%PC% +)?%FUNC%"),
        f("WARNING: .*-safe -> .*-unsafe lock order detected", "possible deadlock in {1}")
            .stack(stack(vec![line("which became (?:.*) at:"), Part::Trace], &[])),
        f("WARNING: possible recursive locking detected", "possible deadlock in {1}")
            .report(r"WARNING: possible recursive locking detected(?:.*\n)+?.*is trying to acquire lock(?:.*\n)+?.*at: (?:%PC% +)?%FUNC%"),
        f("WARNING: inconsistent lock state", "inconsistent lock state in {2}")
            .report(r"WARNING: inconsistent lock state(?:.*\n)+?.*takes(?:.*\n)+?.*at: (?:%PC% +)?%FUNC%")
            .stack(trace(&[])),
        f("WARNING: suspicious RCU usage", "WARNING: suspicious RCU usage in {2}")
            .report("WARNING: suspicious RCU usage(?:.*\n)+?.*?%SRC%")
            .stack(trace(&["rcu", "kmem", "slab"])),
        f("WARNING: kernel stack regs at [0-9a-f]+ in [^ ]* has bad '([^']+)' value", "WARNING: kernel stack regs has bad '{1}' value")
            .no_trace(),
        f("WARNING: kernel stack frame pointer at [0-9a-f]+ in [^ ]* has bad value", "WARNING: kernel stack frame pointer has bad value")
            .no_trace(),
        f("WARNING: bad unlock balance detected!", "WARNING: bad unlock balance in {1}")
            .stack(stack(vec![line("%PC% +%FUNC%"), line(CALL_TRACE), Part::Trace], &[])),
        f("WARNING: held lock freed!", "WARNING: held lock freed in {1}")
            .report(r"WARNING: held lock freed!(?:.*\n)+?.*at:(?: %PC%)? +%FUNC%"),
        f("WARNING: kernel stack regs .* has bad 'bp' value", "WARNING: kernel stack regs has bad value").no_trace(),
        f("WARNING: kernel stack frame pointer .* has bad value", "WARNING: kernel stack regs has bad value").no_trace(),
        f(r"WARNING:[[:space:]]*(?:\n|$)", "WARNING: corrupted").corrupted(),
    ]
}

pub(super) fn oops() -> Oops {
    Oops {
        header: "WARNING:",
        formats: all().into_iter().map(F::done).collect(),
        suppressions: res(&[
            // Userspace and boot messages that are not kernel warnings.
            "WARNING: /etc/ssh/moduli does not exist, using fixed modulus",
            "WARNING: workqueue cpumask: online intersect > possible intersect",
            "WARNING: [Tt]he mand mount option",
            r"WARNING: Unsupported flag value\(s\) of 0x%x in DT_FLAGS_1",
            "WARNING: Unprivileged eBPF is enabled with eIBRS",
            r"WARNING: fbcon: Driver '(.*)' missed to adjust virtual screen size (\((?:\d+)x(?:\d+) vs\. (?:\d+)x(?:\d+)\))",
            "WARNING: See https.* for mitigation options.",
            "WARNING: kernel not compiled with CPU_SRSO",
            r"EXT4-[Ff][Ss](?: \(.*\))?:",
            "(?i)warning: .* uses (deprecated v2 capabilities|wireless extensions)",
            r"XFS \(\w+\): WARNING",
        ]),
    }
}
