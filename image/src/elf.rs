//! Just enough ELF64 reading for the images: sections (a module's `.modinfo`), whether a
//! binary has an interpreter, and a kernel's notes (its PVH entry).

/// A program header naming the dynamic loader.
const PT_INTERP: u32 = 3;
/// A program header over notes.
const PT_NOTE: u32 = 4;

/// Whether an ELF file is statically linked (has no PT_INTERP program header).
pub fn is_static_elf(bytes: &[u8]) -> bool {
    let Some(elf) = Elf::parse(bytes) else {
        return false;
    };
    !elf.has_interpreter()
}

/// The `e_machine` of an ELF64 file: what architecture it runs on.
pub fn elf_machine(bytes: &[u8]) -> Option<u16> {
    Elf::parse(bytes)?.u16(18)
}

/// Just enough of ELF64 little-endian to find sections, the interpreter and notes.
pub(super) struct Elf<'a> {
    bytes: &'a [u8],
}

impl<'a> Elf<'a> {
    pub(super) fn parse(bytes: &'a [u8]) -> Option<Elf<'a>> {
        // 64-bit, little-endian.
        (bytes.len() >= 64 && bytes[..4] == *b"\x7fELF" && bytes[4] == 2 && bytes[5] == 1)
            .then_some(Elf { bytes })
    }

    fn u16(&self, at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(
            self.bytes.get(at..at + 2)?.try_into().ok()?,
        ))
    }

    fn u32(&self, at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.bytes.get(at..at + 4)?.try_into().ok()?,
        ))
    }

    fn u64(&self, at: usize) -> Option<usize> {
        let v = u64::from_le_bytes(self.bytes.get(at..at + 8)?.try_into().ok()?);
        usize::try_from(v).ok()
    }

    /// Whether a `PT_INTERP` program header names a dynamic loader.
    fn has_interpreter(&self) -> bool {
        self.segments().any(|(kind, ..)| kind == PT_INTERP)
    }

    /// The program headers: type, and file offset and size where readable.
    fn segments(&self) -> impl Iterator<Item = (u32, Option<usize>, Option<usize>)> + '_ {
        let (phoff, phentsize, phnum) = match (self.u64(0x20), self.u16(0x36), self.u16(0x38)) {
            (Some(off), Some(size), Some(num)) => (off, usize::from(size), usize::from(num)),
            _ => (0, 0, 0),
        };
        (0..phnum).filter_map(move |i| {
            let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
            Some((self.u32(ph)?, self.u64(ph + 8), self.u64(ph + 32)))
        })
    }

    /// Whether a `PT_NOTE` segment holds a note of type `kind` whose name is `name`
    /// (with its NUL).
    pub(super) fn has_note(&self, name: &[u8], kind: u32) -> bool {
        let align4 = |n: usize| (n + 3) & !3;
        self.segments()
            .filter(|(t, ..)| *t == PT_NOTE)
            .any(|(_, offset, size)| {
                let (Some(offset), Some(size)) = (offset, size) else {
                    return false;
                };
                let (mut at, end) = (offset, offset.saturating_add(size));
                while at + 12 <= end {
                    let (Some(namesz), Some(descsz), Some(k)) =
                        (self.u32(at), self.u32(at + 4), self.u32(at + 8))
                    else {
                        break;
                    };
                    let n = at + 12;
                    if k == kind && self.bytes.get(n..n + name.len()) == Some(name) {
                        return true;
                    }
                    at = n + align4(namesz as usize) + align4(descsz as usize);
                }
                false
            })
    }

    pub(super) fn section(&self, wanted: &str) -> Option<&'a [u8]> {
        let shoff = self.u64(0x28)?;
        let shentsize = self.u16(0x3a)? as usize;
        let shnum = self.u16(0x3c)? as usize;
        let shstrndx = self.u16(0x3e)? as usize;
        let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
        let strtab = header(shstrndx)?;
        let str_off = self.u64(strtab + 0x18)?;
        for i in 0..shnum {
            let h = header(i)?;
            let name_off = str_off.checked_add(self.u32(h)? as usize)?;
            let name = self.bytes.get(name_off..)?;
            let end = name.iter().position(|b| *b == 0)?;
            if &name[..end] == wanted.as_bytes() {
                let off = self.u64(h + 0x18)?;
                let size = self.u64(h + 0x20)?;
                return self.bytes.get(off..off.checked_add(size)?);
            }
        }
        None
    }
}
