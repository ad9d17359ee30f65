# The least a tinyconfig kernel needs to boot the generated initramfs on a
# serial console and run a reproducer: no KASAN, no debug info, so it builds
# in a fraction of the test kernel's time (any arch, any compiler).
CONFIG_PRINTK=y
CONFIG_BUG=y
CONFIG_TTY=y
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_BLK_DEV_INITRD=y
CONFIG_RD_GZIP=y
CONFIG_BINFMT_ELF=y
CONFIG_BINFMT_SCRIPT=y
CONFIG_PROC_FS=y
CONFIG_SYSFS=y
CONFIG_DEVTMPFS=y
CONFIG_DEVTMPFS_MOUNT=y
CONFIG_SHMEM=y
CONFIG_TMPFS=y
CONFIG_FUTEX=y
# 32-bit glibc waits on contended locks with the time32 futex syscall
# (i386 #240), which tinyconfig leaves out: without it a -pthread
# reproducer aborts with "The futex facility returned an unexpected error
# code" before it gets to crash anything.
CONFIG_COMPAT_32BIT_TIME=y
CONFIG_MULTIUSER=y
CONFIG_MAGIC_SYSRQ=y
CONFIG_KALLSYMS=y
CONFIG_PANIC_ON_OOPS=y
