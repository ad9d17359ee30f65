//! [`pack_disk`]: a GCE-bootable disk from a userspace image and a kernel,
//! the way kGym's builder makes one: the kernel written into the image's
//! `/boot` ([`KERNEL_PATH`]), the image packed as `disk.raw` in a gzip'd
//! GNU tar — Compute Engine's raw-disk import format (`images.insert`
//! with `rawDisk.source`).
//!
//! The image is never mounted (no loop devices, no root needed): the
//! kernel goes in with e2fsprogs' `debugfs`, on the whole disk or on its
//! first MBR partition. The image's bootloader (GRUB in syzkaller's GCE
//! images) must load [`KERNEL_PATH`]; kgym does not install one.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::process;

/// Where the kernel goes inside the image.
pub const KERNEL_PATH: &str = "/boot/vmlinuz";

/// How long each tool (copy, debugfs, tar) may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(900);

/// ext2/3/4's superblock magic, at byte 56 of the superblock (byte 1024).
const EXT_MAGIC: [u8; 2] = [0x53, 0xef];

/// Packs `image` (a raw ext4 disk, whole or with an MBR whose first
/// partition is ext4) with `kernel` at [`KERNEL_PATH`] as `disk.raw` in the
/// gzip'd tar `out`. `image` is left untouched; `out` appears whole or not
/// at all.
pub async fn pack_disk(image: &Path, kernel: &Path, out: &Path, cancel: &CancellationToken) -> Result<()> {
    let bad = |reason: String| Error::GceDisk { image: image.to_owned(), reason };
    let kernel_len = std::fs::metadata(kernel).map_err(Error::io(kernel))?.len();
    let offset = ext_offset(image)?
        .ok_or_else(|| bad("no ext2/3/4 file system on the whole disk or on its first MBR partition".into()))?;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let work = tempfile::Builder::new().prefix(".kgym-disk").tempdir_in(dir).map_err(Error::io(dir))?;
    let disk = work.path().join("disk.raw");
    let mut cp = process::command(process::require_program("cp", "install coreutils")?);
    cp.arg("--sparse=always").arg(image).arg(&disk);
    process::run_checked(cp, "cp (the userspace image)", TOOL_TIMEOUT, cancel).await?;

    let debugfs = process::require_program("debugfs", "install e2fsprogs")?;
    let target = format!("{}?offset={offset}", disk.display());
    let script = work.path().join("debugfs.cmds");
    // `mkdir` and `rm` fail harmlessly when /boot exists or holds no kernel.
    let commands = format!("mkdir /boot\ncd /boot\nrm vmlinuz\nwrite {} vmlinuz\n", kernel.display());
    std::fs::write(&script, commands).map_err(Error::io(&script))?;
    let mut write = process::command(&debugfs);
    write.arg("-w").arg("-f").arg(&script).arg(&target);
    process::run_checked(write, "debugfs (write the kernel)", TOOL_TIMEOUT, cancel).await?;
    // debugfs exits 0 whatever its commands did: read the kernel back.
    let check = work.path().join("vmlinuz.check");
    let mut dump = process::command(&debugfs);
    dump.arg("-R").arg(format!("dump {KERNEL_PATH} {}", check.display())).arg(&target);
    let dumped = process::run_checked(dump, "debugfs (read the kernel back)", TOOL_TIMEOUT, cancel).await?;
    let got = std::fs::metadata(&check).map(|m| m.len()).unwrap_or(0);
    if got != kernel_len {
        return Err(bad(format!(
            "{KERNEL_PATH} holds {got} bytes after writing {kernel_len} (full file system?): {}",
            process::output_tail(&dumped, 5)
        )));
    }
    std::fs::remove_file(&check).map_err(Error::io(&check))?;

    let partial = work.path().join("image.tar.gz");
    let mut tar = process::command(process::require_program("tar", "install tar")?);
    tar.args(["--format=oldgnu", "-S", "-czf"]).arg(&partial).arg("-C").arg(work.path()).arg("disk.raw");
    process::run_checked(tar, "tar (pack disk.raw)", TOOL_TIMEOUT, cancel).await?;
    std::fs::rename(&partial, out).map_err(Error::io(out))?;
    Ok(())
}

/// The byte offset of the ext file system in `image`: 0 for a whole-disk
/// one, the first MBR partition's start otherwise; `None` when neither.
fn ext_offset(image: &Path) -> Result<Option<u64>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(image).map_err(Error::io(image))?;
    let mut magic_at = |offset: u64| -> Result<bool> {
        let mut m = [0u8; 2];
        f.seek(SeekFrom::Start(offset + 1024 + 56)).map_err(Error::io(image))?;
        Ok(f.read_exact(&mut m).is_ok() && m == EXT_MAGIC)
    };
    if magic_at(0)? {
        return Ok(Some(0));
    }
    let mut mbr = [0u8; 512];
    let mut f2 = std::fs::File::open(image).map_err(Error::io(image))?;
    if f2.read_exact(&mut mbr).is_err() || mbr[510..] != [0x55, 0xaa] || mbr[446 + 4] == 0 {
        return Ok(None);
    }
    let lba = u32::from_le_bytes([mbr[454], mbr[455], mbr[456], mbr[457]]);
    let offset = u64::from(lba) * 512;
    Ok(if offset > 0 && magic_at(offset)? { Some(offset) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_system_is_found_on_the_disk_or_its_first_partition() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.raw");
        let mut sb = vec![0u8; 4096];
        sb[1080..1082].copy_from_slice(&EXT_MAGIC);
        std::fs::write(&whole, &sb).unwrap();
        assert_eq!(ext_offset(&whole).unwrap(), Some(0));

        let parted = dir.path().join("parted.raw");
        let mut disk = vec![0u8; 2048 * 512 + 4096];
        disk[510] = 0x55;
        disk[511] = 0xaa;
        disk[446 + 4] = 0x83;
        disk[454..458].copy_from_slice(&2048u32.to_le_bytes());
        disk[2048 * 512 + 1080..2048 * 512 + 1082].copy_from_slice(&EXT_MAGIC);
        std::fs::write(&parted, &disk).unwrap();
        assert_eq!(ext_offset(&parted).unwrap(), Some(2048 * 512));

        let junk = dir.path().join("junk.raw");
        std::fs::write(&junk, vec![7u8; 8192]).unwrap();
        assert_eq!(ext_offset(&junk).unwrap(), None);
    }
}
