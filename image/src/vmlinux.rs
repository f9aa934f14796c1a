//! The kernel QEMU boots: the uncompressed ELF `vmlinux` inside Debian's `vmlinuz`,
//! started through its PVH entry point.
//!
//! A bzImage decompresses itself when it starts; under TCG that costs about 0.5 s of
//! every boot. QEMU starts an ELF kernel that carries a PVH entry note (Xen note 18,
//! `XEN_ELFNOTE_PHYS32_ENTRY`) directly, with qboot and with SeaBIOS alike, so the
//! payload is unpacked once per kernel and cached in `<cache>/kernels`. Only LZ4
//! payloads (Debian's cloud kernels) are unpacked here; any other kernel boots as it
//! is, and [`BootKernel::note`] says why.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::elf::Elf;
use super::kernel::Kernel;
use flotilla_host::cache::{cache_dir, prune};

/// How many unpacked kernels the cache keeps (the newest).
const KEEP_KERNELS: usize = 2;

/// The file for QEMU's `-kernel`, and what it is.
#[derive(Debug, Clone)]
pub struct BootKernel {
    pub path: PathBuf,
    /// Whether `path` is the unpacked ELF, started through its PVH entry.
    pub pvh: bool,
    /// For the log: what boots, and why not the faster way if not.
    pub note: String,
}

/// The unpacked `vmlinux` of `kernel` (from the cache, or unpacked now); `kernel.image`
/// itself when it cannot be, with the reason. Never fails: the bzImage always boots.
pub fn boot_kernel(kernel: &Kernel) -> BootKernel {
    match unpacked(kernel) {
        Ok(path) => BootKernel {
            path,
            pvh: true,
            note: "vmlinux unpacked from vmlinuz, PVH entry".into(),
        },
        Err(why) => BootKernel {
            path: kernel.image.clone(),
            pvh: false,
            note: format!("vmlinuz as it is ({why}; about 0.5 s slower under TCG)"),
        },
    }
}

fn unpacked(kernel: &Kernel) -> Result<PathBuf, String> {
    let meta = std::fs::metadata(&kernel.image)
        .map_err(|e| format!("reading {}: {e}", kernel.image.display()))?;
    // Keyed by where the kernel is and which file it is: no need to read 14 MB to
    // find the cached copy.
    let mut key = Sha256::new();
    key.update(kernel.image.to_string_lossy().as_bytes());
    key.update(meta.len().to_le_bytes());
    if let Ok(modified) = meta.modified() {
        if let Ok(since) = modified.duration_since(std::time::UNIX_EPOCH) {
            key.update(since.as_nanos().to_le_bytes());
        }
    }
    let hex: String = key.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache_dir().join("kernels");
    let path = dir.join(format!("vmlinux-{hex}"));
    if path.is_file() {
        // Refresh its time: pruning keeps the newest.
        let _ =
            std::fs::File::open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok(path);
    }
    let image = std::fs::read(&kernel.image)
        .map_err(|e| format!("reading {}: {e}", kernel.image.display()))?;
    let elf = unpack_bzimage(&image)?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(&dir)
        .map_err(|e| format!("writing into {}: {e}", dir.display()))?;
    std::fs::write(tmp.path(), &elf)
        .and_then(|()| {
            // Readable like the cached images (a temporary file starts at 0600).
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
        })
        .map_err(|e| format!("writing {}: {e}", tmp.path().display()))?;
    tmp.persist(&path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    prune(&dir, "vmlinux-", "", KEEP_KERNELS);
    Ok(path)
}

/// LZ4's legacy frame magic, which the kernel's `lz4 -l` payloads start with.
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// A legacy-frame block decompresses to at most this much.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// The ELF kernel inside a bzImage whose payload is LZ4, checked to have a PVH entry.
/// An ELF file with one is returned as it is.
pub fn unpack_bzimage(image: &[u8]) -> Result<Vec<u8>, String> {
    if image.starts_with(b"\x7fELF") {
        return if has_pvh_entry(image) {
            Ok(image.to_vec())
        } else {
            Err("the ELF kernel has no PVH entry note".into())
        };
    }
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?))
    };
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a bzImage (no `HdrS` header)".into());
    }
    let version = u16::from_le_bytes([image[0x206], image[0x207]]);
    if version < 0x208 {
        return Err(format!(
            "boot protocol {}.{:02} has no payload fields",
            version >> 8,
            version & 0xff
        ));
    }
    let setup_sects = match image.get(0x1f1) {
        Some(0) => 4,
        Some(n) => usize::from(*n),
        None => return Err("truncated bzImage".into()),
    };
    let (Some(offset), Some(length)) = (u32_at(0x248), u32_at(0x24c)) else {
        return Err("truncated bzImage".into());
    };
    let start = (setup_sects + 1) * 512 + offset as usize;
    let payload = image
        .get(start..start + length as usize)
        .ok_or("the payload lies outside the file")?;
    if !payload.starts_with(&LZ4_LEGACY_MAGIC) {
        let kind = match payload {
            [0x1f, 0x8b, ..] => "gzip",
            [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
            [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
            [0x5d, 0, 0, ..] => "lzma",
            [0x89, b'L', b'Z', b'O', ..] => "lzo",
            [b'B', b'Z', b'h', ..] => "bzip2",
            _ => "an unknown format",
        };
        return Err(format!("its payload is {kind}, and only LZ4 is unpacked"));
    }
    let elf = unlz4_legacy(payload)?;
    if !elf.starts_with(b"\x7fELF") {
        return Err("the unpacked payload is not an ELF file".into());
    }
    if !has_pvh_entry(&elf) {
        return Err("the kernel has no PVH entry note (CONFIG_PVH)".into());
    }
    Ok(elf)
}

/// Decompresses an LZ4 legacy frame: the magic, then blocks each led by its
/// little-endian compressed size. The kernel's payload ends with the uncompressed
/// size (4 bytes), checked here when present.
fn unlz4_legacy(payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut rest = &payload[LZ4_LEGACY_MAGIC.len()..];
    let mut out = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while rest.len() >= 4 {
        let size = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() == 4 {
            // The trailing uncompressed size.
            if size != out.len() {
                return Err(format!(
                    "the payload unpacked to {} bytes, not the {size} it names",
                    out.len()
                ));
            }
            return Ok(out);
        }
        let data = rest
            .get(4..4 + size)
            .ok_or_else(|| format!("an LZ4 block of {size} bytes runs past the payload"))?;
        let n = lz4_flex::block::decompress_into(data, &mut block)
            .map_err(|e| format!("a corrupt LZ4 block: {e}"))?;
        out.extend_from_slice(&block[..n]);
        rest = &rest[4 + size..];
    }
    if out.is_empty() {
        return Err("an empty LZ4 payload".into());
    }
    Ok(out)
}

/// Whether a 64-bit little-endian ELF file has the Xen `PHYS32_ENTRY` note (type 18)
/// in a `PT_NOTE` segment: QEMU's PVH boot needs it.
pub fn has_pvh_entry(elf: &[u8]) -> bool {
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    Elf::parse(elf).is_some_and(|elf| elf.has_note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debians_cloud_kernel_unpacks_to_a_pvh_elf() {
        let kernel = Kernel::locate(flotilla_host::arch::Arch::host())
            .expect("a kernel: run scripts/setup first");
        let image = std::fs::read(&kernel.image).unwrap();
        let elf = unpack_bzimage(&image).expect("Debian's cloud kernel is LZ4 with PVH");
        assert!(elf.len() > image.len(), "{} > {}", elf.len(), image.len());
        assert!(has_pvh_entry(&elf));
        // An ELF kernel passes through; the same one without its notes does not.
        assert_eq!(unpack_bzimage(&elf).unwrap().len(), elf.len());
    }

    #[test]
    fn other_kernels_say_why_they_boot_as_they_are() {
        assert!(unpack_bzimage(b"garbage")
            .unwrap_err()
            .contains("not a bzImage"));
        let mut fake = vec![0u8; 0x1000];
        fake[0x1f1] = 1; // one setup sector: the payload area starts at 1024
        fake[0x202..0x206].copy_from_slice(b"HdrS");
        fake[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        fake[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        fake[0x24c..0x250].copy_from_slice(&16u32.to_le_bytes());
        fake[1024..1030].copy_from_slice(&[0xfd, b'7', b'z', b'X', b'Z', 0]);
        let why = unpack_bzimage(&fake).unwrap_err();
        assert!(why.contains("xz") && why.contains("only LZ4"), "{why}");
        // A payload length past the end of the file.
        fake[0x24c..0x250].copy_from_slice(&0x10000u32.to_le_bytes());
        assert!(unpack_bzimage(&fake).unwrap_err().contains("outside"));
        // A corrupt LZ4 stream: an error, not a panic.
        fake[0x24c..0x250].copy_from_slice(&16u32.to_le_bytes());
        fake[1024..1028].copy_from_slice(&LZ4_LEGACY_MAGIC);
        fake[1028..1032].copy_from_slice(&4u32.to_le_bytes());
        fake[1032..1036].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(unpack_bzimage(&fake).is_err());
        assert!(!has_pvh_entry(b"\x7fELF\x02\x01"));
    }
}
