//! The `vmmap`-style report of a layout.

use core::fmt;

use super::{Layout, RegionKind};

/// A size in the compact units `vmmap` prints (`512K`, `32.0M`, `1.5T`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Size(pub(crate) u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u32, char); 5] = [(50, 'P'), (40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')];
        let b = self.0;
        for (shift, unit) in UNITS {
            if shift > 10 && b >= 1 << shift {
                let tenths = (u128::from(b) * 10) >> shift;
                return write!(f, "{}.{}{unit}", tenths / 10, tenths % 10);
            }
        }
        if b >= 1 << 10 {
            write!(f, "{}K", b >> 10)
        } else {
            write!(f, "{b}")
        }
    }
}

/// An alignment: bytes below 1 KiB, else the exact power-of-two unit (`16`, `4K`, `2M`, `1G`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Align(pub(crate) u64);

impl fmt::Display for Align {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        let (shift, unit) = match a.trailing_zeros() {
            0..=9 => (0, ""),
            10..=19 => (10, "K"),
            20..=29 => (20, "M"),
            30..=39 => (30, "G"),
            _ => (40, "T"),
        };
        write!(f, "{}{unit}", a >> shift)
    }
}

/// Writes `value` right-aligned in `width` columns (works in `no_std`: the value is formatted
/// twice, once to measure it).
fn right<T: fmt::Display>(f: &mut fmt::Formatter<'_>, value: T, width: usize) -> fmt::Result {
    struct Count(usize);
    impl fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut c = Count(0);
    fmt::write(&mut c, format_args!("{value}"))?;
    for _ in c.0..width {
        f.write_str(" ")?;
    }
    write!(f, "{value}")
}

impl fmt::Display for Layout {
    /// Writes a `vmmap`-style table: one line per region with its name, `start-end` (end
    /// exclusive), `[ size ]`, the alignment of its randomised address, its entropy in bits
    /// and its number of positions; then the least entropy of each half.
    ///
    /// ```text
    /// ==== machvm layout: x86_64, 47-bit halves, 4KiB pages (user randomised, KASLR on)
    /// REGION TYPE         START - END                          [ VSIZE]  ALIGN    BITS      POSITIONS
    /// kernel text         ffffffff8ce00000-ffffffff8ee00000    [ 32.0M]     2M    9.55            752
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let user_on = self.region(RegionKind::Executable).is_randomized();
        let kernel_on = self.region(RegionKind::KernelText).is_randomized();
        writeln!(
            f,
            "==== machvm layout: {}, {}-bit halves, {} pages (user {}, KASLR {})",
            c.arch(),
            c.va().bits(),
            c.page(),
            if user_on {
                "randomised"
            } else {
                "not randomised"
            },
            if kernel_on { "on" } else { "off" },
        )?;
        writeln!(
            f,
            "{:<19} {:<36}[{:>6}]  {:>5}  {:>6}  {:>13}",
            "REGION TYPE", "START - END", "VSIZE", "ALIGN", "BITS", "POSITIONS"
        )?;
        for r in self.regions() {
            let range = r.range();
            write!(f, "{:<19} ", r.kind())?;
            let start = range.raw_start();
            let end = u128::from(start) + u128::from(range.len());
            write!(f, "{start:016x}-{end:016x}")?;
            // The exclusive end has a 17th digit only at the top of the address space.
            f.write_str(if end > u128::from(u64::MAX) {
                "  ["
            } else {
                "   ["
            })?;
            right(f, Size(range.len()), 6)?;
            f.write_str("]  ")?;
            right(f, Align(r.align()), 5)?;
            f.write_str("  ")?;
            right(f, r.bits(), 6)?;
            f.write_str("  ")?;
            right(f, r.positions(), 13)?;
            writeln!(f)?;
        }
        let (user, kernel) = self.min_bits();
        write!(f, "==== least entropy: user ")?;
        match user {
            Some(b) => write!(f, "{b} bits")?,
            None => f.write_str("none")?,
        }
        f.write_str(", kernel ")?;
        match kernel {
            Some(b) => write!(f, "{b} bits"),
            None => f.write_str("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn sizes_and_alignments_read_like_vmmap() {
        assert_eq!(Size(512 << 10).to_string(), "512K");
        assert_eq!(Size(32 << 20).to_string(), "32.0M");
        assert_eq!(Size(3 << 39).to_string(), "1.5T");
        assert_eq!(Size(100).to_string(), "100");
        assert_eq!(Align(16).to_string(), "16");
        assert_eq!(Align(16 << 10).to_string(), "16K");
        assert_eq!(Align(2 << 20).to_string(), "2M");
        assert_eq!(Align(1 << 30).to_string(), "1G");
    }
}
