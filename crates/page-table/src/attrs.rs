//! Portable mapping attributes: protection, privilege, memory type and software bits.

use core::fmt;

use machvm_addr::VmProt;

use crate::error::{AttrProblem, PageTableError};

/// The memory type of a mapping, translated by each format into its cache-control bits.
///
/// x86_64 formats use PAT indices and assume the PAT layout in
/// [`X86_PAT_MSR`](crate::x86_64::X86_PAT_MSR); aarch64 formats use MAIR attribute indices
/// and assume [`AARCH64_MAIR`](crate::aarch64::AARCH64_MAIR).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MemType {
    /// Normal memory, write-back cacheable (the default for RAM).
    #[default]
    WriteBack,
    /// Normal memory, write-through cacheable.
    WriteThrough,
    /// Normal memory, not cacheable, writes may be combined (frame buffers).
    WriteCombining,
    /// Device memory: uncached, no gathering, no reordering, no early write acknowledgement
    /// (x86 UC, aarch64 Device-nGnRnE).
    Uncached,
    /// Device memory with early write acknowledgement (aarch64 Device-nGnRE; x86 UC).
    Device,
}

bitflags::bitflags! {
    /// Software-defined bits stored in ignored bits of leaf entries.
    ///
    /// The hardware never reads them; the VM layer uses them to remember why a page is mapped
    /// the way it is. x86_64 keeps them in bits 9–10, aarch64 in bits 56–57 (bit 55 holds
    /// the aarch64 formats' software dirty state).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SwFlags: u8 {
        /// The page is wired: the pageout path must not unmap it.
        const WIRED = 1 << 0;
        /// The page is mapped read-only for copy-on-write; a write fault copies it.
        const COW = 1 << 1;
    }
}

/// Attributes of a mapping in portable form.
///
/// Built with [`PageAttrs::new`] and the builder methods; each format encodes them into its
/// entry bits. Formats that cannot express write-only or execute-only mappings refuse them
/// (x86_64 cannot map a page without read access).
///
/// # Examples
///
/// ```
/// use machvm_addr::VmProt;
/// use machvm_page_table::{MemType, PageAttrs, SwFlags};
///
/// let user_data = PageAttrs::new(VmProt::READ | VmProt::WRITE).user(true);
/// assert!(user_data.is_user());
/// let mmio = PageAttrs::new(VmProt::READ | VmProt::WRITE).mem_type(MemType::Device).global(true);
/// assert_eq!(mmio.memory_type(), MemType::Device);
/// let cow = PageAttrs::new(VmProt::READ).user(true).sw(SwFlags::COW);
/// assert!(cow.sw_flags().contains(SwFlags::COW));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageAttrs {
    prot: VmProt,
    user: bool,
    global: bool,
    mem: MemType,
    sw: SwFlags,
    allow_wx: bool,
}

impl PageAttrs {
    /// Returns attributes for a kernel (privileged), non-global, write-back mapping with `prot`.
    pub const fn new(prot: VmProt) -> Self {
        Self {
            prot,
            user: false,
            global: false,
            mem: MemType::WriteBack,
            sw: SwFlags::empty(),
            allow_wx: false,
        }
    }

    /// Sets whether unprivileged (user) code may access the mapping.
    #[must_use]
    pub const fn user(mut self, user: bool) -> Self {
        self.user = user;
        self
    }

    /// Sets whether the translation is global (shared by all address spaces, not tagged with
    /// a PCID/ASID).
    #[must_use]
    pub const fn global(mut self, global: bool) -> Self {
        self.global = global;
        self
    }

    /// Sets the memory type.
    #[must_use]
    pub const fn mem_type(mut self, mem: MemType) -> Self {
        self.mem = mem;
        self
    }

    /// Sets the software bits.
    #[must_use]
    pub const fn sw(mut self, sw: SwFlags) -> Self {
        self.sw = sw;
        self
    }

    /// Replaces the protection.
    #[must_use]
    pub const fn with_prot(mut self, prot: VmProt) -> Self {
        self.prot = prot;
        self
    }

    /// Allows a mapping that is writable and executable at once (refused otherwise).
    #[must_use]
    pub const fn allow_write_execute(mut self) -> Self {
        self.allow_wx = true;
        self
    }

    /// Returns the protection.
    pub const fn prot(&self) -> VmProt {
        self.prot
    }

    /// Returns whether user code may access the mapping.
    pub const fn is_user(&self) -> bool {
        self.user
    }

    /// Returns whether the mapping is global.
    pub const fn is_global(&self) -> bool {
        self.global
    }

    /// Returns the memory type.
    pub const fn memory_type(&self) -> MemType {
        self.mem
    }

    /// Returns the software bits.
    pub const fn sw_flags(&self) -> SwFlags {
        self.sw
    }

    /// Returns whether writable + executable was explicitly allowed.
    pub const fn allows_write_execute(&self) -> bool {
        self.allow_wx
    }

    /// Checks the rules every format shares: some access, and no W+X unless allowed.
    pub(crate) const fn check_common(&self) -> Result<(), PageTableError> {
        if self.prot.is_empty() {
            return Err(PageTableError::InvalidAttributes {
                problem: AttrProblem::NoAccess,
            });
        }
        if self.prot.contains(VmProt::WRITE.union(VmProt::EXECUTE)) && !self.allow_wx {
            return Err(PageTableError::InvalidAttributes {
                problem: AttrProblem::WriteExecute,
            });
        }
        Ok(())
    }
}

impl fmt::Debug for PageAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PageAttrs({} {} {}{:?}",
            self.prot,
            if self.user { "user" } else { "kernel" },
            if self.global { "global " } else { "" },
            self.mem
        )?;
        if !self.sw.is_empty() {
            write!(f, " {:?}", self.sw)?;
        }
        f.write_str(")")
    }
}

/// The part of the virtual address space a table translates.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    /// Both halves through one root (x86_64: the upper half is the root's upper entries).
    Both,
    /// The lower half only (aarch64 TTBR0).
    Lower,
    /// The upper half only (aarch64 TTBR1).
    Upper,
}
