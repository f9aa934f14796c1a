//! Kernel modules: the load order of the modules an image wants (dependencies first,
//! from each module's `.modinfo`), and their appended signatures cut off.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::elf::Elf;
use crate::error::Error;

/// The trailer the kernel's `sign-file` appends to a signed module.
const MODULE_SIG_MAGIC: &[u8] = b"~Module signature appended~\n";

/// Cuts a plain (uncompressed) module's appended signature off: the signature, then a
/// 12-byte `struct module_signature` ending in the signature's big-endian length, then
/// [`MODULE_SIG_MAGIC`]. Anything else (unsigned, compressed, malformed) is left as is.
/// Returns whether it cut.
pub fn strip_module_signature(module: &mut Vec<u8>) -> bool {
    const INFO: usize = 12;
    let Some(info_end) = module.len().checked_sub(MODULE_SIG_MAGIC.len()) else {
        return false;
    };
    if !module.ends_with(MODULE_SIG_MAGIC) || info_end < INFO {
        return false;
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&module[info_end - 4..info_end]);
    let sig_len = u32::from_be_bytes(len) as usize;
    match (info_end - INFO).checked_sub(sig_len) {
        Some(end) if end > 0 => {
            module.truncate(end);
            true
        }
        _ => false,
    }
}

/// Resolves `wanted` modules and their dependencies into a load order (dependencies
/// first), as paths relative to `modules_dir`. Built-in modules are skipped.
pub fn resolve_modules(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>, Error> {
    let mut index: HashMap<String, PathBuf> = HashMap::new();
    let kernel_dir = modules_dir.join("kernel");
    let mut stack = vec![kernel_dir.clone()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io {
            what: format!("listing modules in {}", dir.display()),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = module_name(&path) {
                if let Ok(rel) = path.strip_prefix(modules_dir) {
                    index.insert(name, rel.to_path_buf());
                }
            }
        }
    }
    let builtin: BTreeSet<String> = std::fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| module_name(Path::new(l)))
        .collect();

    let mut order = Vec::new();
    let mut state: BTreeMap<String, bool> = BTreeMap::new(); // false: visiting, true: done
    for name in wanted {
        visit(
            &normalize(name),
            None,
            modules_dir,
            &index,
            &builtin,
            &mut state,
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    needed_by: Option<&str>,
    modules_dir: &Path,
    index: &HashMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    state: &mut BTreeMap<String, bool>,
    order: &mut Vec<PathBuf>,
) -> Result<(), Error> {
    match state.get(name) {
        Some(true) => return Ok(()),
        Some(false) => {
            return Err(Error::Image(format!(
                "module dependency cycle through `{name}`"
            )))
        }
        None => {}
    }
    if builtin.contains(name) {
        state.insert(name.to_owned(), true);
        return Ok(());
    }
    let Some(rel) = index.get(name) else {
        let by = needed_by.map_or(String::new(), |m| format!(" (needed by `{m}`)"));
        return Err(Error::Image(format!(
            "kernel module `{name}`{by} is neither in {} nor built in",
            modules_dir.display()
        )));
    };
    state.insert(name.to_owned(), false);
    let bytes = std::fs::read(modules_dir.join(rel)).map_err(|source| Error::Io {
        what: format!("reading module {}", rel.display()),
        source,
    })?;
    let info = modinfo(&bytes).ok_or_else(|| {
        Error::Image(format!(
            "module {} has no readable .modinfo section",
            rel.display()
        ))
    })?;
    for dep in info
        .iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        visit(
            &normalize(dep),
            Some(name),
            modules_dir,
            index,
            builtin,
            state,
            order,
        )?;
    }
    state.insert(name.to_owned(), true);
    order.push(rel.clone());
    Ok(())
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(".ko")?;
    Some(normalize(stem))
}

/// The `key=value` pairs of a module's `.modinfo` section.
pub fn modinfo(ko: &[u8]) -> Option<Vec<(String, String)>> {
    let elf = Elf::parse(ko)?;
    let data = elf.section(".modinfo")?;
    Some(
        data.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                let s = String::from_utf8_lossy(s);
                let (k, v) = s.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kernel;

    #[test]
    fn garbage_is_not_elf() {
        assert!(Elf::parse(b"not an elf at all").is_none());
        assert!(modinfo(&[0u8; 100]).is_none());
    }

    #[test]
    fn module_signatures_are_cut_exactly() {
        let mut signed = b"\x7fELF module body".to_vec();
        signed.extend_from_slice(&[0xAA; 5]); // the signature
        signed.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        signed.extend_from_slice(MODULE_SIG_MAGIC);
        assert!(strip_module_signature(&mut signed));
        assert_eq!(signed, b"\x7fELF module body");
        // Unsigned, too short, or a length that does not fit: untouched.
        let mut plain = b"\x7fELF no signature".to_vec();
        assert!(!strip_module_signature(&mut plain));
        assert_eq!(plain, b"\x7fELF no signature");
        let mut short = MODULE_SIG_MAGIC.to_vec();
        assert!(!strip_module_signature(&mut short));
        let mut lying = vec![1u8; 3];
        lying.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 200]);
        lying.extend_from_slice(MODULE_SIG_MAGIC);
        let before = lying.clone();
        assert!(!strip_module_signature(&mut lying));
        assert_eq!(lying, before);
    }

    #[test]
    fn real_modules_lose_only_their_signature() {
        let kernel = Kernel::locate(flotilla_host::arch::Arch::host())
            .expect("a kernel: run scripts/setup first");
        let order = resolve_modules(&kernel.modules, &["virtio_console"]).unwrap();
        let path = kernel.modules.join(&order[order.len() - 1]);
        let mut bytes = std::fs::read(&path).unwrap();
        let size = bytes.len();
        assert!(
            strip_module_signature(&mut bytes),
            "{} is signed",
            path.display()
        );
        assert!(
            size - bytes.len() > 256 && size - bytes.len() < 4096,
            "{size} -> {}",
            bytes.len()
        );
        assert!(Elf::parse(&bytes).is_some(), "still an ELF file");
        assert!(modinfo(&bytes).is_some(), "its .modinfo is intact");
    }

    #[test]
    fn resolves_real_modules_when_a_kernel_is_present() {
        let kernel = Kernel::locate(flotilla_host::arch::Arch::host())
            .expect("a kernel: run scripts/setup first");
        let order = resolve_modules(&kernel.modules, &["virtio_net"]).unwrap();
        let names: Vec<String> = order.iter().filter_map(|p| module_name(p)).collect();
        // Each module must be there: `None < Some(_)`, so comparing the `Option`s
        // would pass with a module missing.
        let pos = |n: &str| {
            names
                .iter()
                .position(|m| m == n)
                .unwrap_or_else(|| panic!("{n} is not in the load order {names:?}"))
        };
        assert!(pos("failover") < pos("net_failover"), "{names:?}");
        assert!(pos("net_failover") < pos("virtio_net"), "{names:?}");
        let err = resolve_modules(&kernel.modules, &["no_such_module"]).unwrap_err();
        assert!(err.to_string().contains("no_such_module"));
    }
}
