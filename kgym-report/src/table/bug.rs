//! `BUG:` messages: sanitizers (KASAN, KMSAN, KCSAN, KFENCE), bad memory
//! accesses, lockups, locking and scheduling bugs, memory leaks.

use super::{CALL_TRACE, F, Oops, Part, Pick, f, line, res, rip_then_trace, stack, trace};

fn all() -> Vec<F> {
    vec![
        f("BUG: KASAN:", "KASAN: {1} {3} in {4}")
            .report(r"BUG: KASAN: ([a-z\-]+) in %FUNC%(?:.*\n)+?.*(Read|Write) (?:of size|at addr) (?:[0-9a-f]+)")
            .alt(&["bad-access in {4}"])
            .stack(stack(
                vec![line(r"BUG: KASAN: (?:[a-z\-]+) in %FUNC%"), line(CALL_TRACE), Part::Trace],
                // Frames of KASAN_HW_TAGS reports.
                &["kernel_fault", "tag_check", "mem_abort", "^el1_", "^el1h_"],
            )),
        f("BUG: KASAN:", "KASAN: invalid-free in {2}")
            .report("BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in %FUNC%")
            .alt(&["invalid-free in {2}"])
            .stack(stack(
                vec![
                    line("BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in %FUNC%"),
                    line(CALL_TRACE),
                    Part::Trace,
                ],
                &["slab_", "kfree", "vunmap", "vfree"],
            )),
        f(r"BUG: KASAN: ([a-z\-]+) on address(?:.*\n)+?.*(Read|Write) of size ([0-9]+)", "KASAN: {1} {2}"),
        f("BUG: KASAN: (.*)", "KASAN: {1}").corrupted(),
        f("BUG: KMSAN: kernel-usb-infoleak", "KMSAN: kernel-usb-infoleak in {2}")
            .report("BUG: KMSAN: kernel-usb-infoleak in %FUNC%")
            .alt(&["KMSAN origin in {3}"])
            .stack(stack(
                vec![Part::Trace, line("(Local variable .* created at:|Uninit was created at:)"), Part::Trace],
                &["alloc_skb", "usb_submit_urb", "usb_start_wait_urb", "usb_bulk_msg", "usb_interrupt_msg", "usb_control_msg"],
            ))
            .no_trace(),
        f("BUG: KMSAN:", "KMSAN: {1} in {3}")
            .report(r"BUG: KMSAN: ([a-z\-]+) in %FUNC%")
            .alt(&["bad-access in {3}"])
            .stack(stack(
                vec![Part::Trace, line("(Local variable .* created at:|Uninit was created at:)"), Part::Trace],
                // Crypto code is where the bug is hit, rarely where it is.
                &["alloc_skb", "netlink_ack", "netlink_rcv_skb", "_encrypt$", "^(?:crypto|cipher|drbg|rng)_"],
            ))
            .no_trace(),
        f("BUG: KCSAN: data-race", "KCSAN: {1}").report("BUG: KCSAN: (.*)").no_trace(),
        f("BUG: KCSAN:", "KCSAN: {1}").report("BUG: KCSAN: (.*)").no_trace(),
        f("BUG: KFENCE: (use-after-free|out-of-bounds) (read|write) in %FUNC%", "KFENCE: {1} {2} in {4}")
            .alt(&["bad-access in {4}"])
            .stack(stack(vec![line(r"BUG: KFENCE: (?:[a-z\- ]+) in %FUNC%"), Part::Trace], &[])),
        f("BUG: KFENCE: invalid free in %FUNC%", "KFENCE: invalid free in {2}")
            .alt(&["invalid-free in {2}"])
            .no_trace()
            .stack(stack(vec![line(r"BUG: KFENCE: (?:[a-z\- ]+) in %FUNC%"), Part::Trace], &[])),
        f("BUG: KFENCE: invalid (read|write) in %FUNC%", "KFENCE: invalid {1} in {3}")
            .alt(&["bad-access in {3}"])
            .stack(stack(vec![line(r"BUG: KFENCE: (?:[a-z\- ]+) in %FUNC%"), Part::Trace], &[])),
        f("BUG: KFENCE: memory corruption in %FUNC%", "KFENCE: memory corruption in {2}")
            .no_trace()
            .stack(stack(vec![line(r"BUG: KFENCE: (?:[a-z\- ]+) in %FUNC%"), Part::Trace], &[])),
        f(
            "BUG: (?:unable to handle kernel paging request|unable to handle page fault for address|Unable to handle kernel data access)",
            "BUG: unable to handle kernel paging request in {1}",
        )
        .alt(&["bad-access in {1}"])
        .stack(rip_then_trace(&[])),
        f(
            "BUG: (?:unable to handle kernel NULL pointer dereference|kernel NULL pointer dereference|Kernel NULL pointer dereference)",
            "BUG: unable to handle kernel NULL pointer dereference in {1}",
        )
        .alt(&["bad-access in {1}"])
        .stack(rip_then_trace(&[])),
        // The second half of this header is a separate printk and often lost.
        f("BUG: (?:unable to handle kernel|Unable to handle kernel)", "BUG: unable to handle kernel").corrupted(),
        f(
            "BUG: (spinlock|rwlock) (lockup suspected|already unlocked|recursion|cpu recursion|bad magic|wrong owner|wrong CPU|trylock failure on UP)",
            "BUG: {1} {2} in {3}",
        )
        .stack(trace(&["spin_", "_lock", "_unlock"])),
        f("BUG: soft lockup", "BUG: soft lockup in {1}")
            .alt(&["stall in {1}"])
            .stack(rip_then_trace(&[]).pick(Pick::Stall)),
        f("BUG: .*still has locks held!", "BUG: still has locks held in {1}")
            .report(r"BUG: .*still has locks held!(?:.*\n)+?.*%PC% +%FUNC%"),
        f("BUG: scheduling while atomic", "BUG: scheduling while atomic in {1}").stack(trace(&["schedule"])),
        f("BUG: lock held when returning to user space", "BUG: lock held when returning to user space in {1}")
            .report(r"BUG: lock held when returning to user space(?:.*\n)+?.*leaving the kernel with locks still held(?:.*\n)+?.*at: (?:%PC% +)?%FUNC%")
            .no_trace(),
        f("BUG: bad unlock balance detected!", "BUG: bad unlock balance in {1}")
            .stack(stack(vec![line("%PC% +%FUNC%"), line(CALL_TRACE), Part::Trace], &[])),
        f("BUG: held lock freed!", "BUG: held lock freed in {1}").report(r"BUG: held lock freed!(?:.*\n)+?.*%PC% +%FUNC%"),
        f("BUG: Bad rss-counter state", "BUG: Bad rss-counter state").no_trace(),
        f("BUG: non-zero nr_ptes on freeing mm", "BUG: non-zero nr_ptes on freeing mm").no_trace(),
        f("BUG: non-zero nr_pmds on freeing mm", "BUG: non-zero nr_pmds on freeing mm").no_trace(),
        // Filesystem type and block device names are left out of the title:
        // they only split one bug into many.
        f("BUG: Dentry .* still in use", "BUG: Dentry still in use in {1}")
            .report(r"BUG: Dentry .* still in use \([0-9]+\) \[(unmount) of ([^\]]+)\]")
            .alt(&["BUG: Dentry still in use [{1} of {2}]"]),
        f("BUG: Bad page (state|cache)", "BUG: Bad page {1} in {2}").stack(stack(
            vec![line("page last allocated"), Part::Trace],
            &[
                "(free|put|get|update|release)_page", "free_unref", "^_*folio", "truncate_inode_pages",
                "page_frag_free", "alloc", "vmap", "page_owner",
            ],
        )),
        f("BUG: Bad page map", "BUG: Bad page map"),
        f("BUG: workqueue lockup", "BUG: workqueue lockup").no_trace(),
        f("BUG: sleeping function called from invalid context at (.*)", "BUG: sleeping function called from invalid context in {2}")
            .stack(trace(&[])),
        f(r"BUG: using ([a-z_]+)\(\) in preemptible", "BUG: using {1}() in preemptible code in {2}")
            .stack(trace(&["dump_stack", "preemption", "preempt", "debug_", "processor_id", "this_cpu"])),
        f("BUG: workqueue leaked lock or atomic", "BUG: workqueue leaked lock or atomic in {1}")
            .report(r"BUG: workqueue leaked lock or atomic(?:.*\n)+?.*last function: ([a-zA-Z0-9_]+)\n")
            .no_trace(),
        f("BUG: memory leak", "memory leak in {1}").stack(stack(
            vec![line(r"backtrace(?: \(crc [[:xdigit:]]*\))?:"), Part::Trace],
            &[
                "kmemleak", "mmap", "kmem", "slab", "alloc", "create_object", "idr_get", "list_lru_init",
                "kasprintf", "kvasprintf", "pcpu_create", "strdup", "strndup", "memdup",
            ],
        )),
        f("BUG: .*stack guard page was hit at", "BUG: stack guard page was hit in {1}")
            .alt(&["stack-overflow in {1}"])
            .stack(rip_then_trace(&[]).pick(Pick::Stall)),
        // arm/arm64 print this lockdep bug differently from amd64; the title
        // follows amd64's so that both land on one bug.
        f("BUG: Invalid wait context", "WARNING: locking bug in {1}").stack(trace(&["lock_sock", "release_sock"])),
        f(r"BUG:[[:space:]]*(?:\n|$)", "BUG: corrupted").corrupted(),
    ]
}

pub(super) fn oops() -> Oops {
    Oops {
        header: "BUG:",
        formats: all().into_iter().map(F::done).collect(),
        suppressions: res(&[
            // CONFIG_DEBUG_OBJECTS output.
            "ODEBUG:",
            // Android boot noise and ART debug output.
            "Boot_DEBUG:",
            "xlog_status:",
            "DEBUG:",
            // syzkaller's own debug output.
            "BUG: no syscalls can create resource",
        ]),
    }
}
