//! `INFO:` messages: old-style lockdep reports, RCU stalls, hung tasks.

use super::{F, Oops, Part, Pick, RIP, f, line, res, stack, trace};

fn all() -> Vec<F> {
    vec![
        f("INFO: possible circular locking dependency detected", "possible deadlock in {1}")
            .report(r"INFO: possible circular locking dependency detected \](?:.*\n)+?.*is trying to acquire lock(?:.*\n)+?.*at: %PC% +%FUNC%"),
        f("INFO: possible irq lock inversion dependency detected", "possible deadlock in {1}")
            .report(r"INFO: possible irq lock inversion dependency detected \](?:.*\n)+?.*just changed the state of lock(?:.*\n)+?.*at: %PC% +%FUNC%"),
        f("INFO: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected", "possible deadlock in {1}")
            .report(r"INFO: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected \](?:.*\n)+?.*is trying to acquire(?:.*\n)+?.*at: %PC% +%FUNC%"),
        f("INFO: possible recursive locking detected", "possible deadlock in {1}")
            .report(r"INFO: possible recursive locking detected \](?:.*\n)+?.*is trying to acquire lock(?:.*\n)+?.*at: %PC% +%FUNC%"),
        f("INFO: inconsistent lock state", "inconsistent lock state in {1}")
            .report(r"INFO: inconsistent lock state \](?:.*\n)+?.*takes(?:.*\n)+?.*at: %PC% +%FUNC%"),
        f("INFO: rcu_(?:preempt|sched|bh|tasks) (?:self-)?detected(?: expedited)? stall", "INFO: rcu detected stall in {1}")
            .alt(&["stall in {1}"])
            .stack(
                stack(vec![line("apic_timer_interrupt"), line(RIP), Part::Trace], &["apic_timer_interrupt", "rcu"])
                    .or(vec![line("(?:apic_timer_interrupt|Exception stack|el1h_64_irq)"), Part::Trace])
                    .pick(Pick::Stall),
            ),
        f("INFO: trying to register non-static key", "INFO: trying to register non-static key in {1}")
            .stack(trace(&["stack", "lock", "IRQ"])),
        f("INFO: suspicious RCU usage", "INFO: suspicious RCU usage in {2}")
            .report("INFO: suspicious RCU usage(?:.*\n)+?.*?%SRC%")
            .stack(trace(&["rcu", "kmem", "slab"])),
        f("INFO: task %TASK% blocked (?:in I/O wait )?for more than [0-9]+ seconds", "INFO: task hung in {1}")
            .alt(&["hang in {1}"])
            .stack(trace(&[]).pick(Pick::Hang)),
        f("INFO: task %TASK% can't die for more than .* seconds", "INFO: task can't die in {1}")
            .alt(&["hang in {1}"])
            .stack(trace(&["schedule"])),
        // What is left of old-style KASAN reports that lost their header.
        f("INFO: (Freed|Allocated) in (.*)", "INFO: {1} in {2}").corrupted(),
        f(r"INFO:[[:space:]]*(?:\n|$)", "INFO: corrupted").corrupted(),
    ]
}

pub(super) fn oops() -> Oops {
    Oops {
        header: "INFO:",
        formats: all().into_iter().map(F::done).collect(),
        suppressions: res(&[
            "INFO: lockdep is turned off",
            "INFO: Stall ended before state dump start",
            "INFO: NMI handler",
            "INFO: recovery required on readonly filesystem",
            "(handler|interrupt).*took too long",
            // syzkaller's own debug output.
            "INFO: sys_.* is not present in /proc/kallsyms",
            "INFO: no syscalls can create resource",
            // Android.
            "rmt_storage:INFO:",
            // `INVALID BTF_INFO:NUM`.
            "_INFO:",
        ]),
    }
}
