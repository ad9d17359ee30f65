//! QMP against a stand-in peer (the id-less protocol of a `-qmp` server
//! socket) and against real QEMU booting [`crate::boot_sector`].

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::*;
use crate::boot_sector::{AfterMarker, boot_sector};
use crate::process;

/// A QMP peer like QEMU's `-qmp` server socket (no `oob` capability) that
/// connects to `socket`, answers the capabilities negotiation, answers
/// `query-status` only when `answer_status`, and `quit`; returns the
/// commands it received.
fn id_less_peer(socket: &Path, answer_status: bool) -> tokio::task::JoinHandle<Vec<String>> {
    let socket = socket.to_owned();
    tokio::spawn(async move {
        let stream = UnixStream::connect(&socket).await.unwrap();
        let (read, mut write) = tokio::io::split(stream);
        let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}"#;
        write.write_all(format!("{greeting}\r\n").as_bytes()).await.unwrap();
        let mut lines = BufReader::new(read).lines();
        let mut seen = Vec::new();
        while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await {
            let cmd: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(cmd.get("id").is_none(), "no ids without oob: {line}");
            let name = cmd["execute"].as_str().unwrap_or_default().to_owned();
            let reply = match name.as_str() {
                "qmp_capabilities" | "quit" => Some(r#"{"return": {}}"#),
                "query-status" if answer_status => Some(r#"{"return": {"status": "running", "running": true}}"#),
                _ => None,
            };
            seen.push(name);
            if let Some(r) = reply {
                write.write_all(format!("{r}\r\n").as_bytes()).await.unwrap();
            }
        }
        seen
    })
}

#[tokio::test]
async fn status_then_quit_without_command_ids() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("qmp");
    let listener = QmpListener::bind(&socket).unwrap();
    let peer = id_less_peer(&socket, true);
    let (q, _events) = listener.accept(Duration::from_secs(5)).await.unwrap();
    assert_eq!(q.status().await.unwrap(), GuestState::Running);
    q.quit().await.unwrap();
    drop(q);
    assert_eq!(peer.await.unwrap(), ["qmp_capabilities", "query-status", "quit"]);
}

#[tokio::test]
async fn without_ids_a_command_after_an_abandoned_one_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("qmp");
    let listener = QmpListener::bind(&socket).unwrap();
    let peer = id_less_peer(&socket, false);
    let (q, _events) = listener.accept(Duration::from_secs(5)).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(200), q.status()).await.is_err(), "no answer expected");
    // qapi itself would panic here ("duplicate command id 0").
    let err = q.quit().await.unwrap_err();
    assert!(matches!(&err, Error::Qmp { .. }), "{err:?}");
    assert!(kgym_core::failure::error_chain(&err).contains("still pending"), "{err}");
    drop(q);
    assert_eq!(peer.await.unwrap(), ["qmp_capabilities", "query-status"]);
}

#[tokio::test]
async fn a_socket_too_deep_for_sun_path_moves_to_a_short_directory_that_goes_with_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let shallow = QmpListener::bind_in(dir.path()).unwrap();
    assert_eq!(shallow.socket(), dir.path().join("qmp"), "a short path is used as it is");
    let deep = dir.path().join("x".repeat(100));
    std::fs::create_dir_all(&deep).unwrap();
    assert!(QmpListener::bind(&deep.join("qmp")).is_err(), "the kernel refuses paths this long");
    let listener = QmpListener::bind_in(&deep).unwrap();
    let socket = listener.socket().to_owned();
    assert!(socket.as_os_str().len() <= super::SUN_PATH_MAX, "{socket:?}");
    let peer = id_less_peer(&socket, true);
    let (q, _events) = listener.accept(Duration::from_secs(5)).await.unwrap();
    assert_eq!(q.status().await.unwrap(), GuestState::Running);
    assert!(socket.parent().unwrap().exists(), "kept while connected");
    q.quit().await.unwrap();
    drop(q);
    peer.await.unwrap();
    assert!(!socket.parent().unwrap().exists(), "removed with the connection: {socket:?}");
    // A listener nobody connects to removes its directory too.
    let listener = QmpListener::bind_in(&deep).unwrap();
    let short = listener.socket().parent().unwrap().to_owned();
    drop(listener);
    assert!(!short.exists(), "{short:?}");
}

#[tokio::test]
async fn nobody_connecting_is_a_timeout_error() {
    let dir = tempfile::tempdir().unwrap();
    let listener = QmpListener::bind(&dir.path().join("qmp")).unwrap();
    let err = listener.accept(Duration::from_millis(100)).await.unwrap_err();
    assert!(kgym_core::failure::error_chain(&err).contains("no connection"), "{err}");
}

/// A real QEMU, created paused (`-S`), booting the boot sector from a
/// floppy, with pvpanic and `extra` arguments; connected to our QMP
/// listener. Returns QEMU, its group guard, the connection, its events and
/// the temp dir.
async fn real_qemu(
    after: AfterMarker,
    no_reboot: bool,
    extra: &[&str],
) -> Option<(tokio::process::Child, process::GroupGuard, Qmp, mpsc::UnboundedReceiver<VmEvent>, tempfile::TempDir)> {
    let qemu = kgym_testkit::require_tool("qemu-system-x86_64")?;
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("sector.img");
    std::fs::write(&image, boot_sector("KGYM-QMP-TEST", after)).unwrap();
    // Deeper than a Unix socket path may be: the listener moves the socket
    // to a short directory, and QEMU still connects.
    let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
    std::fs::create_dir_all(&deep).unwrap();
    let listener = QmpListener::bind_in(&deep).unwrap();
    let socket = listener.socket().to_owned();
    assert!(!socket.starts_with(&deep), "{socket:?}");
    let mut cmd = process::command(&qemu);
    cmd.args(["-accel", "tcg", "-m", "16", "-S", "-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-device", "pvpanic"])
        .args(if no_reboot { &["-no-reboot"][..] } else { &[] })
        .arg("-drive")
        .arg(format!("file={},format=raw,if=floppy", image.display()))
        .arg("-qmp")
        .arg(format!("unix:{}", socket.display()))
        .args(extra);
    let (child, guard) = process::spawn_piped(&mut cmd, "qemu-system-x86_64").unwrap();
    let (q, events) = listener.accept(Duration::from_secs(10)).await.unwrap();
    Some((child, guard, q, events, dir))
}

/// The next event within 10 s.
async fn next(events: &mut mpsc::UnboundedReceiver<VmEvent>) -> VmEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("an event within 10 s").expect("open")
}

#[tokio::test]
async fn a_real_qemu_reports_a_pvpanic_then_quits_on_request() {
    let Some((mut child, _guard, q, mut events, _dir)) =
        real_qemu(AfterMarker::Panic, true, &["-action", "panic=pause"]).await
    else {
        return;
    };
    assert_eq!(q.status().await.unwrap(), GuestState::Stopped("prelaunch".into()));
    q.cont().await.unwrap();
    assert_eq!(next(&mut events).await, VmEvent::Resume);
    assert_eq!(next(&mut events).await, VmEvent::GuestPanicked { action: "pause".into() });
    assert_eq!(next(&mut events).await, VmEvent::Stop);
    assert_eq!(q.status().await.unwrap(), GuestState::Panicked);
    // The guest did run: its marker is on the console.
    let mut console = vec![0u8; 64];
    let mut stdout = child.stdout.take().unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), stdout.read(&mut console)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&console[..n]).contains("KGYM-QMP-TEST"), "{:?}", &console[..n]);

    let asked = Instant::now();
    q.quit().await.unwrap();
    assert_eq!(next(&mut events).await, VmEvent::Shutdown { reason: "host-qmp-quit".into() });
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("QEMU exits").unwrap();
    assert!(status.success(), "{status}");
    eprintln!("quit → QEMU gone: {:?}", asked.elapsed());
}

#[tokio::test]
async fn with_the_default_panic_action_qemu_shuts_down_by_itself() {
    let Some((mut child, _guard, q, mut events, _dir)) = real_qemu(AfterMarker::Panic, true, &[]).await else { return };
    q.cont().await.unwrap();
    assert_eq!(next(&mut events).await, VmEvent::Resume);
    assert_eq!(next(&mut events).await, VmEvent::GuestPanicked { action: "poweroff".into() });
    assert_eq!(next(&mut events).await, VmEvent::Shutdown { reason: "guest-panic".into() });
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("QEMU exits").unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_paused_guest_is_seen_and_with_no_reboot_a_reset_is_a_shutdown() {
    let Some((mut child, _guard, q, mut events, _dir)) = real_qemu(AfterMarker::Halt, true, &[]).await else { return };
    q.cont().await.unwrap();
    assert_eq!(next(&mut events).await, VmEvent::Resume);
    assert_eq!(q.status().await.unwrap(), GuestState::Running, "a halted CPU still counts as running");
    q.stop().await.unwrap();
    assert_eq!(next(&mut events).await, VmEvent::Stop);
    assert_eq!(q.status().await.unwrap(), GuestState::Stopped("paused".into()));
    // kgym boots with -no-reboot: QEMU turns a reset into its exit.
    q.system_reset().await.unwrap();
    assert_eq!(next(&mut events).await, VmEvent::Shutdown { reason: "host-qmp-system-reset".into() });
    assert!(tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("QEMU exits").unwrap().success());
}

#[tokio::test]
async fn without_no_reboot_a_reset_is_a_reset() {
    let Some((mut child, _guard, q, mut events, _dir)) = real_qemu(AfterMarker::Halt, false, &[]).await else { return };
    q.cont().await.unwrap();
    assert_eq!(next(&mut events).await, VmEvent::Resume);
    q.system_reset().await.unwrap();
    assert_eq!(next(&mut events).await, VmEvent::Reset { reason: "host-qmp-system-reset".into() });
    assert_eq!(q.status().await.unwrap(), GuestState::Running);
    q.quit().await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("QEMU exits").unwrap().success());
}
