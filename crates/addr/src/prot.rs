//! Mach VM protections and the current/maximum protection pair.

use core::fmt;

use crate::error::AddrError;

bitflags::bitflags! {
    /// Access rights of a mapping, with Mach's `vm_prot_t` bit values
    /// (`osfmk/mach/vm_prot.h`: `VM_PROT_READ = 1`, `VM_PROT_WRITE = 2`,
    /// `VM_PROT_EXECUTE = 4`).
    ///
    /// Formats as the three-letter `rwx` column of `vmmap`: `rw-`, `r-x`, `---`.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::VmProt;
    ///
    /// let rx = VmProt::READ | VmProt::EXECUTE;
    /// assert_eq!(rx.to_string(), "r-x");
    /// assert!(VmProt::READ.is_subset_of(rx));
    /// assert!(!rx.permits(VmProt::WRITE));
    /// assert_eq!(VmProt::DEFAULT.bits(), 3);
    /// ```
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct VmProt: u32 {
        /// Read access (`VM_PROT_READ`).
        const READ = 1;
        /// Write access (`VM_PROT_WRITE`).
        const WRITE = 1 << 1;
        /// Execute access (`VM_PROT_EXECUTE`).
        const EXECUTE = 1 << 2;
    }
}

impl VmProt {
    /// No access (`VM_PROT_NONE`).
    pub const NONE: Self = Self::empty();
    /// Read and write (`VM_PROT_DEFAULT`), the default current protection of new mappings.
    pub const DEFAULT: Self = Self::READ.union(Self::WRITE);
    /// Read, write and execute (`VM_PROT_ALL`), the default maximum protection.
    pub const ALL: Self = Self::READ.union(Self::WRITE).union(Self::EXECUTE);

    /// Returns whether every right in `self` is also in `other`.
    #[inline]
    pub const fn is_subset_of(self, other: Self) -> bool {
        other.contains(self)
    }

    /// Returns whether `self` grants every right in `access`.
    #[inline]
    pub const fn permits(self, access: Self) -> bool {
        self.contains(access)
    }
}

impl fmt::Display for VmProt {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letter = |flag: Self, c: char| if self.contains(flag) { c } else { '-' };
        write!(
            f,
            "{}{}{}",
            letter(Self::READ, 'r'),
            letter(Self::WRITE, 'w'),
            letter(Self::EXECUTE, 'x')
        )
    }
}

impl fmt::Debug for VmProt {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VmProt({self}")?;
        let unknown = self.bits() & !Self::all().bits();
        if unknown != 0 {
            write!(f, " | {unknown:#x}")?;
        }
        f.write_str(")")
    }
}

/// A mapping's current protection and the maximum it may ever be raised to, with the rules of
/// Mach `vm_protect`: the current protection is always a subset of the maximum, and the maximum
/// can only be lowered.
///
/// # Examples
///
/// ```
/// use machvm_addr::{AddrError, ProtPair, VmProt};
///
/// let mut p = ProtPair::new(VmProt::DEFAULT, VmProt::ALL)?;
/// p.set_maximum(VmProt::READ)?; // current is clipped to r--
/// assert_eq!(p.current(), VmProt::READ);
/// assert!(matches!(p.set_current(VmProt::DEFAULT), Err(AddrError::ProtectionExceedsMax { .. })));
/// assert!(matches!(p.set_maximum(VmProt::ALL), Err(AddrError::MaxProtectionRaised { .. })));
/// assert_eq!(p.current(), VmProt::READ);
/// # Ok::<(), AddrError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProtPair {
    current: VmProt,
    maximum: VmProt,
}

impl ProtPair {
    /// The protection of a fresh Mach mapping: current `rw-`, maximum `rwx`.
    pub const DEFAULT: Self = Self {
        current: VmProt::DEFAULT,
        maximum: VmProt::ALL,
    };

    /// Returns the pair `current` / `maximum`.
    ///
    /// # Errors
    ///
    /// - [`AddrError::ProtectionExceedsMax`] if `current` has a right `maximum` lacks.
    #[inline]
    pub const fn new(current: VmProt, maximum: VmProt) -> Result<Self, AddrError> {
        if current.is_subset_of(maximum) {
            Ok(Self { current, maximum })
        } else {
            Err(AddrError::ProtectionExceedsMax {
                requested: current,
                max: maximum,
            })
        }
    }

    /// Returns the current protection.
    #[inline]
    pub const fn current(self) -> VmProt {
        self.current
    }

    /// Returns the maximum protection.
    #[inline]
    pub const fn maximum(self) -> VmProt {
        self.maximum
    }

    /// Sets the current protection (Mach `vm_protect(set_maximum = FALSE)`).
    ///
    /// # Errors
    ///
    /// - [`AddrError::ProtectionExceedsMax`] if `new` has a right the maximum lacks; the pair
    ///   is unchanged.
    #[inline]
    pub fn set_current(&mut self, new: VmProt) -> Result<(), AddrError> {
        *self = Self::new(new, self.maximum)?;
        Ok(())
    }

    /// Lowers the maximum protection and clips the current protection to it (Mach
    /// `vm_protect(set_maximum = TRUE)`).
    ///
    /// # Errors
    ///
    /// - [`AddrError::MaxProtectionRaised`] if `new` has a right the old maximum lacks; the
    ///   pair is unchanged.
    #[inline]
    pub fn set_maximum(&mut self, new: VmProt) -> Result<(), AddrError> {
        if !new.is_subset_of(self.maximum) {
            return Err(AddrError::MaxProtectionRaised {
                requested: new,
                max: self.maximum,
            });
        }
        self.maximum = new;
        self.current &= new;
        Ok(())
    }
}

impl Default for ProtPair {
    #[inline]
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn mach_bit_values() {
        assert_eq!(VmProt::READ.bits(), 1);
        assert_eq!(VmProt::WRITE.bits(), 2);
        assert_eq!(VmProt::EXECUTE.bits(), 4);
        assert_eq!(VmProt::ALL.bits(), 7);
        assert_eq!(VmProt::NONE.bits(), 0);
    }

    #[test]
    fn formats_like_vmmap() {
        assert_eq!(VmProt::NONE.to_string(), "---");
        assert_eq!(VmProt::DEFAULT.to_string(), "rw-");
        assert_eq!((VmProt::READ | VmProt::EXECUTE).to_string(), "r-x");
        assert_eq!(format!("{:?}", VmProt::ALL), "VmProt(rwx)");
        assert_eq!(
            format!("{:?}", VmProt::from_bits_retain(0x11)),
            "VmProt(r-- | 0x10)"
        );
    }

    #[test]
    fn subset_and_permits() {
        assert!(VmProt::NONE.is_subset_of(VmProt::NONE));
        assert!(VmProt::DEFAULT.is_subset_of(VmProt::ALL));
        assert!(!VmProt::ALL.is_subset_of(VmProt::DEFAULT));
        assert!(VmProt::ALL.permits(VmProt::EXECUTE));
        assert!(VmProt::READ.permits(VmProt::NONE));
    }

    #[test]
    fn current_never_exceeds_maximum() {
        assert_eq!(
            ProtPair::new(VmProt::ALL, VmProt::READ),
            Err(AddrError::ProtectionExceedsMax {
                requested: VmProt::ALL,
                max: VmProt::READ
            })
        );
        let mut p = ProtPair::default();
        assert_eq!(p.set_current(VmProt::ALL), Ok(()));
        p.set_maximum(VmProt::READ | VmProt::EXECUTE).unwrap();
        assert_eq!(p.current(), VmProt::READ | VmProt::EXECUTE);
        let before = p;
        assert!(p.set_current(VmProt::WRITE).is_err());
        assert_eq!(p, before);
        assert_eq!(
            p.set_maximum(VmProt::DEFAULT),
            Err(AddrError::MaxProtectionRaised {
                requested: VmProt::DEFAULT,
                max: VmProt::READ | VmProt::EXECUTE
            })
        );
        assert_eq!(p, before);
        p.set_maximum(VmProt::NONE).unwrap();
        assert_eq!((p.current(), p.maximum()), (VmProt::NONE, VmProt::NONE));
    }
}
