//! `[[machines.NAME.disks]]`: the checks that turn the raw tables into [`DiskSpec`]s.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::raw::RawDisk;
use super::types::{DiskSource, DiskSpec, InjectError};

/// The events of QEMU 7.2's blkdebug (`BlkdebugEvent` in qapi/block-core.json).
pub const BLKDEBUG_EVENTS: &[&str] = &[
    "l1_update",
    "l1_grow_alloc_table",
    "l1_grow_write_table",
    "l1_grow_activate_table",
    "l2_load",
    "l2_update",
    "l2_update_compressed",
    "l2_alloc_cow_read",
    "l2_alloc_write",
    "read_aio",
    "read_backing_aio",
    "read_compressed",
    "write_aio",
    "write_compressed",
    "vmstate_load",
    "vmstate_save",
    "cow_read",
    "cow_write",
    "reftable_load",
    "reftable_grow",
    "reftable_update",
    "refblock_load",
    "refblock_update",
    "refblock_update_part",
    "refblock_alloc",
    "refblock_alloc_hookup",
    "refblock_alloc_write",
    "refblock_alloc_write_blocks",
    "refblock_alloc_write_table",
    "refblock_alloc_switch_table",
    "cluster_alloc",
    "cluster_alloc_bytes",
    "cluster_free",
    "flush_to_os",
    "flush_to_disk",
    "pwritev_rmw_head",
    "pwritev_rmw_after_head",
    "pwritev_rmw_tail",
    "pwritev_rmw_after_tail",
    "pwritev",
    "pwritev_zero",
    "pwritev_done",
    "empty_image_prepare",
    "l1_shrink_write_table",
    "l1_shrink_free_l2_clusters",
    "cor_write",
    "cluster_alloc_space",
];

/// The longest disk name: a virtio-blk serial holds 20 bytes.
const MAX_DISK_NAME: usize = 20;

/// Checks `[[machines.NAME.disks]]`; an error carries the span it is about.
pub(super) fn check_disks(
    raw: Vec<Spanned<RawDisk>>,
    dir: &Path,
) -> Result<Vec<DiskSpec>, (Range<usize>, String)> {
    let mut disks: Vec<DiskSpec> = Vec::new();
    for (index, disk) in raw.into_iter().enumerate() {
        let span = disk.span();
        let disk = disk.into_inner();
        let name = match disk.name {
            Some(name) => {
                let ok = name.get_ref().len() <= MAX_DISK_NAME
                    && name.get_ref().starts_with(|c: char| c.is_ascii_lowercase())
                    && name
                        .get_ref()
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
                if !ok || name.get_ref() == "root" {
                    return Err((
                        name.span(),
                        format!(
                            "disk name `{}` must start with a lowercase letter and use only \
                             lowercase letters, digits, `_` and `-` (at most {MAX_DISK_NAME} \
                             characters; `root` is the image's)",
                            name.get_ref()
                        ),
                    ));
                }
                if disks.iter().any(|d| &d.name == name.get_ref()) {
                    return Err((
                        name.span(),
                        format!("two disks are named `{}`", name.get_ref()),
                    ));
                }
                name.into_inner()
            }
            None => format!("disk{}", index + 1),
        };
        let source = match (disk.size, disk.base) {
            (Some(size), None) => DiskSource::Blank {
                bytes: parse_size(size.get_ref())
                    .map_err(|m| (size.span(), format!("disk `{name}`: size {m}")))?,
            },
            (None, Some(base)) => {
                let resolved = dir.join(base.get_ref());
                if !resolved.is_file() {
                    return Err((
                        base.span(),
                        format!("disk `{name}`: base {} does not exist", resolved.display()),
                    ));
                }
                DiskSource::Overlay {
                    base: std::path::absolute(&resolved).unwrap_or(resolved),
                }
            }
            _ => {
                return Err((
                    span,
                    format!(
                        "disk `{name}` needs exactly one of `size` (a blank disk) and \
                         `base` (an overlay over an image)"
                    ),
                ))
            }
        };
        let mut inject_errors = Vec::new();
        for rule in disk.inject_errors {
            let rule = rule.into_inner();
            if !BLKDEBUG_EVENTS.contains(&rule.event.get_ref().as_str()) {
                return Err((
                    rule.event.span(),
                    format!(
                        "disk `{name}`: unknown blkdebug event `{}` (e.g. `read_aio`, \
                         `write_aio`, `flush_to_disk`; see QEMU's BlkdebugEvent)",
                        rule.event.get_ref()
                    ),
                ));
            }
            let errno = match rule.errno {
                Some(e) => u32::try_from(*e.get_ref())
                    .ok()
                    .filter(|e| (1..=133).contains(e))
                    .ok_or_else(|| {
                        (
                            e.span(),
                            format!("disk `{name}`: errno must be 1 to 133 (5 is EIO)"),
                        )
                    })?,
                None => 5,
            };
            inject_errors.push(InjectError {
                event: rule.event.into_inner(),
                errno,
                once: rule.once,
            });
        }
        disks.push(DiskSpec {
            name,
            source,
            inject_errors,
        });
    }
    Ok(disks)
}

/// A disk size in bytes: an integer is MiB; a string is a positive integer with a
/// `K`, `M` or `G` suffix (powers of 1024), e.g. `"512K"`, `"64M"`, `"2G"`.
fn parse_size(value: &toml::Value) -> Result<u64, String> {
    const MAX: u64 = 1 << 50; // 1 PiB: more is likelier a typo than a wish
    let bytes = match value {
        toml::Value::Integer(mib) => u64::try_from(*mib)
            .ok()
            .and_then(|m| m.checked_mul(1 << 20)),
        toml::Value::String(text) => {
            let text = text.trim();
            let unit = match text.chars().last() {
                Some('K' | 'k') => 1 << 10,
                Some('M' | 'm') => 1 << 20,
                Some('G' | 'g') => 1 << 30,
                _ => 0,
            };
            text.get(..text.len().saturating_sub(1))
                .filter(|digits| unit > 0 && digits.chars().all(|c| c.is_ascii_digit()))
                .and_then(|digits| digits.parse::<u64>().ok())
                .and_then(|n| n.checked_mul(unit))
        }
        _ => None,
    };
    match bytes {
        Some(b) if b > 0 && b <= MAX => Ok(b),
        _ => Err(format!(
            "{value} is not a size: write an integer of MiB (64) or a string with a \
             K, M or G suffix (\"64M\"); at most 1 PiB"
        )),
    }
}
