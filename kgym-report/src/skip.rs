//! Which stack frames are never the guilty one, and how the guilty frame is
//! picked for stalls and hangs. The lists are syzkaller's (its
//! `pkg/report/linux.go`), kept here as data.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use regex::Regex;

use crate::table::Pick;

/// Frames that are reporting, allocation, locking, string or list
/// machinery: a frame whose name contains a match is never guilty.
const GENERIC_FRAMES: &[&str] = &[
    "__sanitizer",
    "__asan",
    "kasan",
    "hwasan",
    "__msan",
    "kmsan",
    "kcsan_setup_watchpoint",
    "check_memory_region",
    "check_heap_object",
    "check_object",
    "read_word_at_a_time",
    "(read|write)_once_.*nocheck",
    "print_address_description",
    "panic",
    "invalid_op",
    "report_bug",
    "fixup_bug",
    "print_report",
    "print_usage_bug",
    "do_error",
    "_trap$|do_trap",
    "show_stack",
    "dump_stack",
    "walk_stack",
    "dump_backtrace",
    "warn_slowpath",
    "warn_alloc",
    "warn_bogus",
    "__warn",
    "alloc_page",
    "k?v?(?:m|z|c)alloc",
    "krealloc",
    "kmem_cache",
    "allocate_slab",
    "__alloc_frozen_pages_noprof",
    "folio_(?:alloc|unlock)",
    "filemap_alloc_folio",
    "__filemap_get_folio",
    "find_or_create_page",
    "do_read_cache_folio",
    "read_cache_page",
    "pagecache_get_page",
    "grab_cache_page_write_begin",
    "slab_",
    "debug_object",
    "timer_is_static_object",
    "work_is_static_object",
    "__might_fault",
    "print_unlock",
    "imbalance_bug",
    "lockdep",
    "bh_enable",
    "bh_disable",
    "perf_trace",
    "lock_acquire",
    "lock_release",
    "lock_class",
    "mark_lock",
    "(reacquire|mark)_held_locks",
    "raw_spin_rq",
    "spin_lock",
    "spin_trylock",
    "spin_unlock",
    "read_lock",
    "read_trylock",
    "write_lock",
    "write_trylock",
    "read_unlock",
    "write_unlock",
    "^down$",
    "down_read",
    "down_write",
    "down_read_trylock",
    "down_write_trylock",
    "down_trylock",
    "up_read",
    "up_write",
    "^mutex_",
    "^__mutex_",
    "^rt_mutex_",
    "owner_on_cpu",
    "osq_lock",
    "osq_unlock",
    "atomic(64)?_(dec|inc|read|set|or|xor|and|add|sub|fetch|xchg|cmpxchg|try)",
    "(set|clear|change|test)_bit",
    "__wake_up",
    "^refcount_",
    "^kref_",
    "ref_tracker",
    "seqprop_assert",
    "memcpy",
    "memcmp",
    "memset",
    "memchr",
    "memmove",
    "memdup",
    "strcmp",
    "strncmp",
    "strcpy",
    "strlcpy",
    "strncpy",
    "strscpy",
    "strlen",
    "strstr",
    "strnstr",
    "strnlen",
    "strchr",
    "strdup",
    "strndup",
    "copy_to_user",
    "copy_from_user",
    "copy_to_iter",
    "copy_from_iter",
    "copy_page_to_iter",
    "copy_page_from_iter",
    "copy_folio_to_iter",
    "^copyin$",
    "^copyout$",
    "put_user",
    "get_user",
    "might_fault",
    "might_sleep",
    "list_add",
    "list_del",
    "list_replace",
    "list_move",
    "list_splice",
    "^rb_",
    "^__rb_",
    "_indirect_thunk_",
    "string",
    "pointer",
    "snprintf",
    "scnprintf",
    "kasprintf",
    "kvasprintf",
    "printk",
    "va_format",
    "dev_info",
    "dev_notice",
    "dev_warn",
    "dev_err",
    "dev_alert",
    "dev_crit",
    "dev_emerg",
    "program_check_exception",
    "program_check_common",
    "del_timer",
    "flush_work",
    "__cancel_work_timer",
    "cancel_work_sync",
    "try_to_grab_pending",
    "flush_workqueue",
    "drain_workqueue",
    "destroy_workqueue",
    "queue_work",
    "finish_wait",
    "kthread_stop",
    "kobject_",
    "add_uevent_var",
    "get_device_parent",
    "device_add",
    "device_del",
    "device_unregister",
    "device_destroy",
    "device_release",
    "devres_release_all",
    "hwrng_unregister",
    "i2c_del_adapter",
    "__unregister_client",
    "device_for_each_child",
    "rollback_registered",
    "unregister_netdev",
    "sysfs_remove",
    "device_remove_file",
    "tty_unregister_device",
    "dummy_urb_enqueue",
    "usb_kill_urb",
    "usb_kill_anchored_urbs",
    "usb_control_msg",
    "usb_hcd_submit_urb",
    "usb_submit_urb",
    "^complete$",
    "wait_for_completion",
    "^kv?free$",
    "kfree_skb",
    "readb$",
    "readw$",
    "readl$",
    "readq$",
    "writeb$",
    "writew$",
    "writel$",
    "writeq$",
    "logic_in",
    "logic_out",
    r"^crc\d+",
    "crc_itu_t",
    "__might_resched",
    "assertfail",
    "^iput$",
    "^iput_final$",
    "^ihold$",
    "hex_dump_to_buffer",
    "print_hex_dump",
    "^klist_",
    "(trace|lockdep)_(hard|soft)irq",
    "^(un)?lock_page",
    "stack_trace_consume_entry",
    "arch_stack_walk",
    "stack_trace_save",
    "insert_work",
    "__queue_delayed_work",
    "queue_delayed_work_on",
    "ida_free",
    // arm64 translation fault handling.
    "do_(kernel|translation)_fault",
    "do_mem_abort",
    "el1_abort",
    "el1h_64_sync(?:_handler)?",
    "print_tainted",
    "xas_(?:start|load|find)",
    "find_lock_entries",
    "truncate_inode_pages_range",
    "__phys_addr",
    "__fortify_report",
    "cleanup_srcu_struct",
    "rhashtable_lookup",
    "extract_(user|iter)_to_sg",
    "drop_nlink",
    "^get_taint$",
    "^put_device$",
    "lock_timer_base",
    "__timer_delete_sync",
    "sk_stop_timer_sync",
    "__mod_timer",
    "fast_dput",
    "dput",
    "mark_buffer_dirty",
];

/// Frame names that are never guilty: the generic list plus a rule's own.
/// Plain substrings (most of the list) are searched with one automaton,
/// the few real patterns with one regex.
#[derive(Debug)]
pub(crate) struct FrameSkip {
    substrings: AhoCorasick,
    patterns: Option<Regex>,
}

impl FrameSkip {
    /// The generic list plus `extra` (regex syntax).
    pub(crate) fn new(extra: &[&str]) -> Self {
        let is_plain = |p: &&str| !p.contains(|c| "\\.+*?()|[]{}^$".contains(c));
        let all: Vec<&str> = GENERIC_FRAMES.iter().chain(extra).copied().collect();
        let (plain, patterns): (Vec<&str>, Vec<&str>) = all.into_iter().partition(is_plain);
        Self {
            substrings: AhoCorasick::new(plain).expect("skip substrings build"),
            patterns: (!patterns.is_empty()).then(|| Regex::new(&patterns.join("|")).expect("skip patterns compile")),
        }
    }

    /// Whether `frame` is never guilty.
    pub(crate) fn is_match(&self, frame: &str) -> bool {
        self.substrings.is_match(frame) || self.patterns.as_ref().is_some_and(|r| r.is_match(frame))
    }
}

/// Syscall-entry prefixes that differ between arches and kernel versions;
/// titles use the name without them.
pub(crate) const STRIP_PREFIXES: &[&str] = &[
    "SYSC_",
    "SyS_",
    "sys_",
    "__x64_",
    "__ia32_",
    "__arm64_",
    "____sys_",
    "___sys_",
    "__sys_",
    "__se_",
    "__se_sys_",
    "__do_sys_",
    "compat_SYSC_",
    "compat_SyS_",
    "ksys_",
];

/// The shortest name left after removing one of [`STRIP_PREFIXES`].
pub(crate) fn strip_frame(frame: &str) -> &str {
    STRIP_PREFIXES.iter().filter_map(|p| frame.strip_prefix(p)).min_by_key(|s| s.len()).unwrap_or(frame)
}

/// Dispatch points of stalls: the guilty frame is the one just above the
/// first of these (the code that was looping, seen from its entry).
const STALL_ANCHORS: &[&str] = &[
    // Generic dispatchers of work, and some of their callers.
    "process_one_work",
    "do_syscall_",
    "do_fast_syscall_",
    "sysenter_dispatch",
    "tracesys_phase2",
    "el0_svc_handler",
    "invoke_syscall",
    "ret_fast_syscall",
    "netif_receive_skb",
    "do_softirq",
    "call_timer_fn",
    "_run_timers",
    "run_timer_softirq",
    "hrtimer_run",
    "run_ksoftirqd",
    "smpboot_thread_fn",
    "^kthread$",
    "start_secondary",
    "cpu_startup_entry",
    "ret_from_fork",
    // Discriminating file operations.
    "vfs_write",
    "vfs_read",
    "vfs_iter_read",
    "vfs_iter_write",
    "do_iter_read",
    "do_iter_write",
    "call_read_iter",
    "call_write_iter",
    "new_sync_read",
    "new_sync_write",
    "vfs_ioctl",
    "ksys_ioctl",
    "compat_ioctl",
    "compat_sys_ioctl",
    "blkdev_driver_ioctl",
    "blkdev_ioctl",
    "^call_read_iter",
    "^call_write_iter",
    "do_iter_readv_writev",
    "^call_mmap",
    "mmap_region",
    "do_mmap",
    "do_dentry_open",
    "vfs_open",
    // Socket operations.
    "^sock_sendmsg",
    "^sock_recvmsg",
    "^sock_release",
    "^__sock_release",
    "^setsockopt$",
    "kernel_setsockopt",
    "sock_common_setsockopt",
    "^listen$",
    "kernel_listen",
    "sk_common_release",
    "^sock_mmap",
    "^accept$",
    "kernel_accept",
    "^sock_do_ioctl",
    "^sock_ioctl",
    "^compat_sock_ioctl",
    "^nfnetlink_rcv_msg",
    "^rtnetlink_rcv_msg",
    "^netlink_dump",
    "^(sys_)?(socketpair|connect|ioctl)",
    // Page fault entry points.
    "__do_fault",
    "do_page_fault",
    "^page_fault$",
    // Return-to-user callbacks.
    "__fput",
    "task_work_run",
    "exit_to_usermode",
    "smp_call_function",
    "tasklet_action",
    "tasklet_hi_action",
];

static STALL_ANCHOR_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&STALL_ANCHORS.join("|")).expect("anchor list compiles"));

/// Picks the guilty frame of a stall: the frame before the first dispatch
/// point. Returns the name and its index in `frames`.
pub(crate) fn pick_stall(frames: &[&str]) -> Option<(String, usize)> {
    let (mut prev, mut prev_idx) = (*frames.first()?, 0);
    for (i, &frame) in frames.iter().enumerate() {
        if STALL_ANCHOR_RE.is_match(frame) {
            if frame.contains("smp_call_function") {
                return Some(("smp_call_function".to_owned(), i));
            }
            return Some((prev.to_owned(), prev_idx));
        }
        (prev, prev_idx) = (frame, i);
    }
    None
}

/// Whether, once `frame` (stripped) is found, later frames of the same
/// trace cannot change the pick: the first frame for [`Pick::First`], a
/// dispatch point for stalls, an RCU/rtnl wait for hangs.
pub(crate) fn settles(pick: Pick, frame: &str) -> bool {
    match pick {
        Pick::First => true,
        Pick::Stall => STALL_ANCHOR_RE.is_match(frame),
        Pick::Hang => HANG_ANCHORS.iter().any(|(a, _)| frame.contains(a)),
    }
}

/// Waits grouped together in hang titles: (frame substring, title frame;
/// none: the frame itself).
const HANG_ANCHORS: &[(&str, Option<&str>)] = &[
    ("rtnl_lock", None),
    ("synchronize_rcu", Some("synchronize_rcu")),
    ("synchronize_srcu", Some("synchronize_rcu")),
    ("synchronize_net", Some("synchronize_rcu")),
    ("synchronize_sched", Some("synchronize_rcu")),
];

/// Picks the guilty frame of a hung task: waits on RCU grace periods are
/// grouped as `synchronize_rcu`, waits on rtnl as `rtnl_lock`; otherwise the
/// first frame that is not scheduling/locking/waiting machinery.
pub(crate) fn pick_hang(frames: &[&str]) -> Option<(String, usize)> {
    const WAITING: &[&str] = &[
        "sched",
        "_lock",
        "_slowlock",
        "down",
        "rwsem",
        "completion",
        "kthread",
        "wait",
        "synchronize",
        "context_switch",
        "__switch_to",
        "cancel_delayed_work",
        "rcu_barrier",
    ];
    for (i, frame) in frames.iter().enumerate() {
        if let Some((_, group)) = HANG_ANCHORS.iter().find(|(a, _)| frame.contains(a)) {
            return Some((group.unwrap_or(frame).to_owned(), i));
        }
    }
    frames.iter().enumerate().find(|(_, f)| !WAITING.iter().any(|w| f.contains(w))).map(|(i, f)| ((*f).to_owned(), i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_syscall_prefixes_to_the_shortest() {
        assert_eq!(strip_frame("__x64_sys_read"), "sys_read");
        assert_eq!(strip_frame("__se_sys_read"), "read");
        assert_eq!(strip_frame("SyS_read"), "read");
        assert_eq!(strip_frame("foo"), "foo");
    }

    #[test]
    fn stall_and_hang_picks() {
        assert_eq!(pick_stall(&["a", "b", "vfs_write", "c"]), Some(("b".into(), 1)));
        assert_eq!(pick_stall(&["a", "smp_call_function_many"]), Some(("smp_call_function".into(), 1)));
        assert_eq!(pick_stall(&["a", "b"]), None);
        assert_eq!(pick_hang(&["schedule", "foo", "synchronize_net"]), Some(("synchronize_rcu".into(), 2)));
        assert_eq!(pick_hang(&["schedule", "foo"]), Some(("foo".into(), 1)));
    }

    #[test]
    fn skip_list_matches_generic_frames() {
        let re = FrameSkip::new(&["extra_thing", "^only$"]);
        assert!(re.is_match("kasan_report"));
        assert!(re.is_match("mutex_lock_nested"));
        assert!(re.is_match("my_extra_thing"));
        assert!(!re.is_match("ext4_fill_super"));
        assert!(re.is_match("only") && !re.is_match("not_only"));
        assert!(re.is_match("kfree") && !re.is_match("kfree_rcu_work"));
    }
}
