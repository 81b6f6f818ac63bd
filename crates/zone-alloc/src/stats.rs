//! Zone statistics and the zprint table.

use core::fmt;

use crate::zone::ZoneName;

/// A zone's counters at one moment, with zprint's columns.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ZoneStats {
    pub(crate) name: ZoneName,
    /// The element size the zone was created with.
    pub element_size: usize,
    /// Bytes an element really occupies (size rounded up to alignment).
    pub stride: usize,
    /// Bytes per chunk (zprint's "alloc size").
    pub chunk_size: usize,
    /// Bytes of chunks the zone holds now.
    pub cur_size: usize,
    /// The most bytes of chunks the zone ever held.
    pub max_size: usize,
    /// Element slots in the chunks held now.
    pub cur_elements: usize,
    /// The zone's element limit, if it has one.
    pub max_elements: Option<usize>,
    /// Elements allocated and not freed.
    pub in_use: usize,
    /// Free elements held in magazines (per-CPU and depot).
    pub cached: usize,
    /// Allocations since the zone was created (the lifetime total that zprint shows with
    /// `-t`; its "alloc count" column is [`elements_per_chunk`](Self::elements_per_chunk)).
    pub alloc_count: u64,
    /// Elements per chunk: zprint's "alloc count", the elements the zone gains each time it
    /// takes a chunk ("alloc size") from its page source.
    pub elements_per_chunk: usize,
    /// Chunks with no element out, kept for reuse (given back by `trim`/`drain`).
    pub empty_chunks: usize,
    /// Elements taken out of circulation after a hardening violation.
    pub quarantined: usize,
    /// Chunks retired because their freelist was found corrupt.
    pub quarantined_chunks: usize,
    /// Bytes of magazines the zone allocated.
    pub magazine_bytes: usize,
}

impl ZoneStats {
    /// Returns the zone's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Bytes of the chunks held that are not in use by an allocated element: free slots,
    /// cached elements, padding and chunk headers.
    pub const fn wasted_bytes(&self) -> usize {
        self.cur_size
            .saturating_sub(self.in_use * self.element_size)
    }

    /// [`wasted_bytes`](Self::wasted_bytes) as a percentage of the current size (0 for an
    /// empty zone).
    pub fn fragmentation_percent(&self) -> u32 {
        match self.cur_size {
            0 => 0,
            size => u32::try_from(self.wasted_bytes().saturating_mul(100) / size).unwrap_or(100),
        }
    }
}

/// Writes a size the way zprint does: bytes below 10 KiB, then K, M or G.
fn human(f: &mut fmt::Formatter<'_>, width: usize, bytes: usize) -> fmt::Result {
    const K: usize = 1024;
    let (value, unit) = if bytes < 10 * K {
        (bytes, "")
    } else if bytes < 10 * K * K {
        (bytes / K, "K")
    } else if bytes < 10 * K * K * K {
        (bytes / (K * K), "M")
    } else {
        (bytes / (K * K * K), "G")
    };
    let mut buf = [0u8; 24];
    let text = format_into(&mut buf, value, unit);
    write!(f, "{text:>width$}")
}

/// Writes the decimal digits of `value` into a buffer; returns them (at most 20 bytes).
pub(crate) fn decimal(buf: &mut [u8; 20], value: usize) -> &[u8] {
    let mut n = value;
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[start..]
}

/// Formats `value` followed by `unit` into `buf` without allocating.
fn format_into<'b>(buf: &'b mut [u8; 24], value: usize, unit: &str) -> &'b str {
    let mut digits = [0u8; 20];
    let digits = decimal(&mut digits, value);
    let len = digits.len();
    buf[..len].copy_from_slice(digits);
    let unit = unit.as_bytes();
    buf[len..len + unit.len()].copy_from_slice(unit);
    core::str::from_utf8(&buf[..len + unit.len()]).unwrap_or("?")
}

/// Renders zone statistics as zprint's table.
///
/// # Examples
///
/// ```
/// use machvm_zone_alloc::{NoCpuCache, SystemPages, Zone, ZoneConfig, ZprintTable};
///
/// let zone: Zone<_, _, 1> = Zone::new(ZoneConfig::new("vm.pages", 64), SystemPages::new(), NoCpuCache)?;
/// let p = zone.alloc()?;
/// let table = ZprintTable::new(&[zone.stats()]).to_string();
/// assert!(table.lines().any(|l| l.starts_with("vm.pages")));
/// # unsafe { zone.free(p)? };
/// # Ok::<(), machvm_zone_alloc::ZoneError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ZprintTable<'a> {
    zones: &'a [ZoneStats],
}

impl<'a> ZprintTable<'a> {
    /// A table of `zones`, one row each, in the given order.
    pub const fn new(zones: &'a [ZoneStats]) -> Self {
        Self { zones }
    }
}

impl fmt::Display for ZprintTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<26}{:>6}{:>12}{:>12}{:>11}{:>12}{:>12}{:>7}{:>12}{:>6}",
            "zone name", "elem", "cur", "max", "cur", "max", "cur", "alloc", "alloc", "frag"
        )?;
        writeln!(
            f,
            "{:<26}{:>6}{:>12}{:>12}{:>11}{:>12}{:>12}{:>7}{:>12}{:>6}",
            "", "size", "size", "size", "#elts", "#elts", "inuse", "size", "count", "%"
        )?;
        writeln!(f, "{:-<116}", "")?;
        for z in self.zones {
            write!(f, "{:<26}", z.name())?;
            write!(f, "{:>6}", z.element_size)?;
            human(f, 12, z.cur_size)?;
            human(f, 12, z.max_size)?;
            write!(f, "{:>11}", z.cur_elements)?;
            match z.max_elements {
                Some(n) => write!(f, "{n:>12}")?,
                None => write!(f, "{:>12}", "-")?,
            }
            write!(f, "{:>12}", z.in_use)?;
            human(f, 7, z.chunk_size)?;
            writeln!(
                f,
                "{:>12}{:>6}",
                z.elements_per_chunk,
                z.fragmentation_percent()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Human(usize);
    impl fmt::Display for Human {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            human(f, 0, self.0)
        }
    }

    #[test]
    fn sizes_read_like_zprint() {
        use alloc::string::ToString;
        assert_eq!(Human(0).to_string(), "0");
        assert_eq!(Human(10 * 1024 - 1).to_string(), "10239");
        assert_eq!(Human(16 * 1024).to_string(), "16K");
        assert_eq!(Human(64 << 20).to_string(), "64M");
        assert_eq!(Human(12 << 30).to_string(), "12G");
    }
}
