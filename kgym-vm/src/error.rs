//! The error type of `kgym-vm`.
//!
//! An error means the run could not be carried out (bad input, a missing
//! tool, a broken host); a kernel that crashes or does not boot is a
//! *result* ([`crate::RunOutput`]), never an error.

use std::path::PathBuf;
use std::time::Duration;

use kgym_core::stage::build::Arch;

/// What went wrong in `kgym-vm`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The run request is inconsistent (zero instances, missing kernel...).
    #[error("accept the run request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// The run asks for an architecture this crate cannot boot.
    #[error("run a {} guest: kgym-vm boots x86_64 and i386 kernels", arch.as_str())]
    UnsupportedArch {
        /// The architecture asked for.
        arch: Arch,
    },
    /// A host tool the run needs is not installed.
    #[error("find {tool} on this host: {hint}")]
    ToolMissing {
        /// The program name.
        tool: String,
        /// How to get it.
        hint: String,
    },
    /// A local file could not be read or written.
    #[error("access {path}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A subprocess could not be started.
    #[error("start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A helper subprocess (qemu-img, git, make, ssh...) failed.
    #[error("run {program}: {status}: {stderr_tail}")]
    CommandFailed {
        /// The program and its main arguments.
        program: String,
        /// How it exited.
        status: String,
        /// The last lines of its output.
        stderr_tail: String,
    },
    /// A helper subprocess ran past its time limit and was killed.
    #[error("run {program}: no result after {timeout:?}")]
    CommandTimeout {
        /// The program.
        program: String,
        /// The limit.
        timeout: Duration,
    },
    /// The C reproducer does not compile: the input's fault, not the host's.
    #[error("compile the C reproducer: {compiler} {status}")]
    ReproducerDoesNotCompile {
        /// The compiler used.
        compiler: String,
        /// How the compiler exited.
        status: String,
        /// The compiler's output (errors and warnings).
        output: String,
    },
    /// The syzkaller program's header or text cannot be used.
    #[error("read the syzkaller program: {reason}")]
    BadSyzProgram {
        /// What is wrong.
        reason: String,
    },
    /// syz-execprog/syz-executor could not be provided: no checkout, no Go,
    /// or neither the requested nor the fallback commit builds.
    #[error("provide syzkaller binaries at {commit}: {reason}")]
    Syzkaller {
        /// The commit(s) tried.
        commit: String,
        /// Why it failed (build output tail, missing Go...).
        reason: String,
    },
    /// QEMU exited before the guest produced any output, with an error.
    #[error("start qemu ({program}): {status}: {stderr_tail}")]
    QemuFailed {
        /// The QEMU binary.
        program: String,
        /// How it exited.
        status: String,
        /// Its stderr.
        stderr_tail: String,
    },
    /// QEMU stopped the guest for a reason of its own (QMP status `paused`,
    /// `internal-error`, `io-error`...): neither a kernel crash nor a hang,
    /// and the run cannot go on.
    #[error("keep the VM running: QEMU reports the guest {status}: {stderr_tail}")]
    VmStopped {
        /// QEMU's run state.
        status: String,
        /// QEMU's stderr (an internal error explains itself there).
        stderr_tail: String,
    },
    /// The QMP control socket failed.
    #[error("talk to qemu over QMP at {socket}")]
    Qmp {
        /// The socket path.
        socket: PathBuf,
        /// The transport or protocol error.
        #[source]
        source: std::io::Error,
    },
    /// The initramfs could not be built.
    #[error("build the initramfs: {reason}")]
    Initramfs {
        /// What is wrong.
        reason: String,
    },
    /// A binary meant for the guest (busybox, the reproducer) is built for
    /// another architecture than the guest's, or is no executable at all:
    /// the guest could not run it.
    #[error("put {what} in an {} guest: {} is {found}; {need}", guest.as_str(), path.display())]
    GuestBinaryArch {
        /// What the binary is for (`busybox`, `the C reproducer`).
        what: String,
        /// The binary.
        path: PathBuf,
        /// What it is (`an x86_64 binary`, `not an ELF executable`).
        found: String,
        /// The guest's architecture.
        guest: Arch,
        /// What the guest needs instead, and how to get it.
        need: String,
    },
    /// A GCE disk could not be packed from a userspace image.
    #[error("pack a GCE disk from {}: {reason}", image.display())]
    GceDisk {
        /// The userspace image.
        image: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An artifact could not be read or stored.
    #[error("move artifact {key}")]
    Artifact {
        /// The artifact key.
        key: String,
        /// The store's error.
        #[source]
        source: kgym_core::Error,
    },
    /// The run was cancelled; every VM it started has been stopped.
    #[error("finish the run: cancelled")]
    Cancelled,
    /// Compute Engine refused a call for quota: HTTP 429, or 403 with a
    /// `quotaExceeded`/`rateLimitExceeded` reason (feature `gce`).
    #[error("call compute {call}: quota exceeded (HTTP {status}): {message}")]
    GceQuota {
        /// The API call and its target (`instances.insert kgym-1a2b-0`).
        call: String,
        /// The HTTP status (403 or 429).
        status: u16,
        /// Google's error message.
        message: String,
    },
    /// Compute Engine refused a call for permission: HTTP 403 with another
    /// reason (feature `gce`).
    #[error("call compute {call}: permission denied: {message}")]
    GcePermission {
        /// The API call and its target.
        call: String,
        /// Google's error message.
        message: String,
    },
    /// The resource a Compute Engine call names does not exist: HTTP 404
    /// (feature `gce`).
    #[error("call compute {call}: not found: {message}")]
    GceNotFound {
        /// The API call and its target.
        call: String,
        /// Google's error message.
        message: String,
    },
    /// Any other HTTP error of the Compute Engine API (feature `gce`).
    #[error("call compute {call}: HTTP {status}: {message}")]
    GceApi {
        /// The API call and its target.
        call: String,
        /// The HTTP status.
        status: u16,
        /// Google's error message (or the start of the body when it is
        /// not Google's JSON error).
        message: String,
    },
    /// A Compute Engine call got no usable answer: connection, timeout or
    /// an unreadable body (feature `gce`).
    #[error("call compute {call}: {reason}")]
    GceTransport {
        /// The API call and its target.
        call: String,
        /// What went wrong.
        reason: String,
    },
    /// A Compute Engine operation finished (`DONE`) with errors (feature
    /// `gce`).
    #[error("finish compute operation {operation} ({call}): {message}")]
    GceOperation {
        /// The call that started it.
        call: String,
        /// The operation's name.
        operation: String,
        /// The operation's errors, `code: message` joined by `; `.
        message: String,
    },
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
