//! `x86_64` TLB instructions: `invlpg`, `INVPCID`, CR3 and CR4 writes.
//!
//! Everything that executes a privileged instruction is either an `unsafe fn` or a method of
//! [`X86Tlb`], whose `unsafe` constructor carries the privilege contract. Tests never reach
//! this code: the layouts it relies on are tested in `x86_regs.rs`.

use core::arch::asm;

use machvm_addr::{PageSize, PhysAddr, VaWidth, VirtAddr};

use super::ArchError;
use super::x86_regs::{
    CR3_PCID_MASK, CR4_LA57, CR4_PCIDE, CR4_PGE, Cr3, InvpcidDescriptor, InvpcidKind, PCID_BITS,
    StalePcids, X86Features,
};
use crate::{Asid, TlbCaps, TlbOps};

/// Executes `CPUID` with `leaf` and `subleaf` and returns EAX, EBX, ECX, EDX.
fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let eax: u32;
    let ebx: u64;
    let ecx: u32;
    let edx: u32;
    // SAFETY: CPUID exists on every x86_64 CPU and works at any privilege level; it reads and
    // writes only EAX..EDX. RBX is reserved by LLVM, so it is saved in a scratch register and
    // swapped back, leaving CPUID's EBX in the scratch register.
    unsafe {
        asm!(
            "mov {saved}, rbx",
            "cpuid",
            "xchg {saved}, rbx",
            saved = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        );
    }
    [eax, ebx as u32, ecx, edx]
}

impl X86Features {
    /// Reads the features of the executing CPU with `CPUID` (unprivileged, so this works at
    /// any CPL; under a hypervisor it reports what the hypervisor exposes).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use machvm_tlb::arch::X86Features;
    ///
    /// let f = X86Features::detect();
    /// println!("pcid: {}, invpcid: {}", f.has_pcid(), f.has_invpcid());
    /// ```
    pub fn detect() -> Self {
        let [max_leaf, ..] = cpuid(0, 0);
        let [_, _, leaf1_ecx, _] = cpuid(1, 0);
        let leaf7_ebx = if max_leaf >= 7 { cpuid(7, 0)[1] } else { 0 };
        Self::from_cpuid(max_leaf, leaf1_ecx, leaf7_ebx)
    }
}

/// Returns the current CR3.
///
/// # Safety
///
/// - The caller runs at CPL0 (`MOV` from CR3 faults elsewhere).
#[inline]
pub unsafe fn read_cr3() -> Cr3 {
    let value: u64;
    // SAFETY: the caller runs at CPL0; reading CR3 has no side effect.
    unsafe {
        asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags));
    }
    Cr3::from_bits(value)
}

/// Loads CR3: switches to the page tables at `value.root()` with PCID `value.pcid()`, keeping
/// that PCID's cached translations if `value.is_no_flush()` (and CR4.PCIDE = 1).
///
/// # Safety
///
/// - The caller runs at CPL0 with IA-32e paging on.
/// - `value.root()` is a valid top-level table for the current paging mode that maps the
///   executing code, its stack, and everything the caller touches next, at the same
///   addresses and with compatible attributes.
/// - With CR4.PCIDE = 0, `value.pcid()` is 0 and no-flush is off (those bits are then PWT/PCD
///   and a reserved bit).
/// - If no-flush is set, no translation cached for that PCID is stale (the caller has
///   invalidated what changed, or tracks it, as [`X86Tlb::switch_address_space`] does).
#[inline]
pub unsafe fn write_cr3(value: Cr3) {
    // SAFETY: the caller's contract above; without `nomem` the asm is also a compiler barrier,
    // so page-table writes are not moved past the switch.
    unsafe {
        asm!("mov cr3, {}", in(reg) value.bits(), options(nostack, preserves_flags));
    }
}

/// Returns the current CR4.
///
/// # Safety
///
/// - The caller runs at CPL0.
#[inline]
pub unsafe fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: the caller runs at CPL0; reading CR4 has no side effect.
    unsafe {
        asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Writes CR4.
///
/// # Safety
///
/// - The caller runs at CPL0 and `value` differs from the current CR4 only in bits whose change
///   is valid now (Intel SDM Vol. 3A §2.5).
#[inline]
unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller's contract; the asm is a compiler barrier (no `nomem`).
    unsafe {
        asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags));
    }
}

/// Sets CR4.PCIDE, enabling process-context identifiers on the executing CPU. Does nothing if
/// they are already enabled.
///
/// Construct [`X86Tlb`] after this call: it reads CR4.PCIDE once.
///
/// # Examples
///
/// ```no_run
/// use machvm_tlb::arch::{X86Features, X86Tlb, enable_pcid};
///
/// let features = X86Features::detect();
/// if features.has_pcid() {
///     // SAFETY: early boot at CPL0 in IA-32e mode, interrupts off, CR3 holds PCID 0.
///     unsafe { enable_pcid(features)? };
/// }
/// // SAFETY: at CPL0 with paging on, on the CPU the features describe.
/// let tlb = unsafe { X86Tlb::new(features) };
/// # Ok::<(), machvm_tlb::arch::ArchError>(())
/// ```
///
/// # Errors
///
/// - [`ArchError::Unsupported`] if `features` does not report PCIDs.
/// - [`ArchError::PcidFieldNotZero`] if CR3\[11:0\] is not zero (setting PCIDE would fault).
///
/// # Safety
///
/// - The caller runs at CPL0 in IA-32e mode (64-bit paging), and `features` is true of the
///   executing CPU.
/// - Nothing loads CR3 between this call's check of CR3\[11:0\] and its CR4 write (interrupts
///   off, or no interrupt handler switches address spaces).
pub unsafe fn enable_pcid(features: X86Features) -> Result<(), ArchError> {
    if !features.has_pcid() {
        return Err(ArchError::Unsupported { feature: "PCID" });
    }
    // SAFETY: the caller runs at CPL0.
    let cr4 = unsafe { read_cr4() };
    if cr4 & CR4_PCIDE != 0 {
        return Ok(());
    }
    // SAFETY: the caller runs at CPL0.
    let cr3 = unsafe { read_cr3() };
    let field = cr3.bits() & CR3_PCID_MASK;
    if field != 0 {
        return Err(ArchError::PcidFieldNotZero {
            field: field as u16,
        });
    }
    // SAFETY: the CPU supports PCIDs (caller's `features`), it is in IA-32e mode (caller) and
    // CR3[11:0] is zero (checked above, and nothing reloads CR3 meanwhile per the caller), which
    // are the conditions for setting CR4.PCIDE (Intel SDM Vol. 3A §4.10.1).
    unsafe { write_cr4(cr4 | CR4_PCIDE) };
    Ok(())
}

/// Executes `invlpg` on `va`: drops the translations of `va` for the current PCID and the
/// global translations of `va`, and the paging-structure caches' entries for it.
///
/// # Safety
///
/// - The caller runs at CPL0.
#[inline]
unsafe fn invlpg(va: VirtAddr) {
    // SAFETY: the caller runs at CPL0; INVLPG only drops cached translations. The asm is a
    // compiler barrier (no `nomem`), so the page-table writes it follows stay before it.
    unsafe {
        asm!("invlpg [{}]", in(reg) va.as_u64(), options(nostack, preserves_flags));
    }
}

/// Executes `INVPCID` of `kind` with `desc`.
///
/// # Safety
///
/// - The caller runs at CPL0 on a CPU with `INVPCID`.
/// - For [`InvpcidKind::IndividualAddress`], the descriptor's address is canonical for the
///   paging mode in use; for it and [`InvpcidKind::SingleContext`], its PCID is 0 when
///   CR4.PCIDE = 0.
#[inline]
unsafe fn invpcid(kind: InvpcidKind, desc: &InvpcidDescriptor) {
    // SAFETY: the caller's contract; `desc` is a live, 16-byte descriptor with its reserved
    // bits zero (guaranteed by `InvpcidDescriptor`'s constructors). The asm is a compiler
    // barrier (no `nomem`).
    unsafe {
        asm!(
            "invpcid {}, [{}]",
            in(reg) kind.as_u64(),
            in(reg) core::ptr::from_ref(desc),
            options(nostack, preserves_flags),
        );
    }
}

/// Invalidates every TLB entry of every PCID, global ones included, by toggling CR4.PGE twice
/// with interrupts off (Intel SDM Vol. 3A §4.10.4.1: a `MOV` to CR4 that changes PGE does so).
///
/// # Safety
///
/// - The caller runs at CPL0.
#[inline]
unsafe fn flush_all_by_pge_toggle() {
    // SAFETY: the caller runs at CPL0. PGE can be changed freely in IA-32e mode; the second
    // write restores the original CR4 exactly. Interrupts are off in between (PUSHFQ/CLI, then
    // POPFQ restores IF), so no handler observes or rewrites the toggled CR4. The block pushes
    // to the stack, so `nostack` is not claimed, and POPFQ rewrites the flags.
    unsafe {
        asm!(
            "pushfq",
            "cli",
            "mov {orig}, cr4",
            "mov {toggled}, {orig}",
            "xor {toggled}, {pge}",
            "mov cr4, {toggled}",
            "mov cr4, {orig}",
            "popfq",
            orig = out(reg) _,
            toggled = out(reg) _,
            pge = const CR4_PGE,
        );
    }
}

/// How one invalidation by address reaches its PCID, decided once per call.
#[derive(Debug, Clone, Copy)]
enum PageTarget {
    /// The PCID is current (or PCIDs are off): `invlpg`.
    Current,
    /// Another PCID, with `INVPCID`: type 0, plus `invlpg` for global translations.
    Invpcid(Asid),
    /// Another PCID, without `INVPCID`: it was marked stale; `invlpg` for global translations.
    Stale,
}

/// TLB maintenance of one `x86_64` CPU: [`TlbOps`] over `invlpg`, `INVPCID` and CR3/CR4.
///
/// Operations by address space use PCIDs when CR4.PCIDE was set at construction:
///
/// | operation | PCID current (or PCIDs off) | other PCID, `INVPCID` | other PCID, no `INVPCID` |
/// |---|---|---|---|
/// | `invalidate_page` | `invlpg` | `INVPCID` type 0 + `invlpg` | mark stale + `invlpg` |
/// | `invalidate_asid` | `INVPCID` type 1, else CR3 reload | `INVPCID` type 1 | mark stale |
/// | `invalidate_all` | `INVPCID` type 2, else CR4.PGE toggle | same | same |
///
/// (`invlpg` is issued for another PCID too because `INVPCID` type 0 keeps global
/// translations and the trait asks for them to go.) A PCID marked stale is flushed by the
/// next [`switch_address_space`](Self::switch_address_space) to it. Invalidations are
/// synchronous and local: `sync`/`complete` do nothing and [`TlbCaps::broadcast`] is false,
/// so other CPUs need a shootdown.
///
/// An ASID wider than 12 bits cannot name a PCID; requests with one fall back to
/// [`invalidate_all`](TlbOps::invalidate_all). Addresses that are not canonical for the
/// paging mode (48-bit, or 57-bit with CR4.LA57) have no translations and are skipped.
///
/// One `X86Tlb` per CPU, used only on that CPU and with preemption off during each call: the
/// current PCID (read from CR3 at the start of a call) and the stale set are per-CPU state.
///
/// # Examples
///
/// ```no_run
/// use machvm_addr::VirtAddr;
/// use machvm_tlb::arch::{X86Features, X86Tlb};
/// use machvm_tlb::{Asid, TlbOps};
///
/// // SAFETY: at CPL0 with paging on, on the CPU the features describe.
/// let tlb = unsafe { X86Tlb::new(X86Features::detect()) };
/// tlb.sync();
/// tlb.invalidate_page(Asid::new(5), VirtAddr::new(0x7fff_0000_0000), true);
/// tlb.complete();
/// ```
#[derive(Debug)]
pub struct X86Tlb {
    features: X86Features,
    pcid: bool,
    width: VaWidth,
    stale: StalePcids,
}

impl X86Tlb {
    /// Returns the TLB operations of the executing CPU, with `features` deciding which
    /// instructions are used. Reads CR4 once for PCIDE and LA57.
    ///
    /// # Safety
    ///
    /// - The caller runs at CPL0 with IA-32e paging on, and so does every later use of the
    ///   value (every method executes privileged instructions).
    /// - `features` is true of this CPU (`INVPCID` must exist if it says so); use
    ///   [`X86Features::detect`] unless you know better.
    /// - The value is used only on the CPU that created it, and CR4.PCIDE and CR4.LA57 do not
    ///   change while it is in use.
    pub unsafe fn new(features: X86Features) -> Self {
        // SAFETY: the caller runs at CPL0.
        let cr4 = unsafe { read_cr4() };
        Self {
            features,
            pcid: cr4 & CR4_PCIDE != 0,
            width: if cr4 & CR4_LA57 != 0 {
                VaWidth::X86_64_5LEVEL
            } else {
                VaWidth::X86_64_4LEVEL
            },
            stale: StalePcids::new(),
        }
    }

    /// Returns the features the operations are chosen by.
    #[inline]
    pub fn features(&self) -> X86Features {
        self.features
    }

    /// Returns whether CR4.PCIDE was set at construction.
    #[inline]
    pub fn is_pcid_enabled(&self) -> bool {
        self.pcid
    }

    /// Returns the set of PCIDs whose next load must flush.
    #[inline]
    pub fn stale(&self) -> &StalePcids {
        &self.stale
    }

    /// Returns the PCID in CR3 (always [`Asid::KERNEL`] with PCIDs off).
    pub fn current_pcid(&self) -> Asid {
        if !self.pcid {
            return Asid::KERNEL;
        }
        // SAFETY: the constructor's contract: this runs at CPL0.
        unsafe { read_cr3() }.pcid()
    }

    /// Switches to the page tables at `root` with PCID `pcid`, keeping the PCID's cached
    /// translations unless `flush` is set or the PCID was marked stale (the mark is then
    /// cleared).
    ///
    /// Set `flush` when `pcid` was just given to a different address space. With PCIDs off,
    /// `pcid` is ignored and the load flushes every non-global translation.
    ///
    /// # Errors
    ///
    /// - [`ArchError::Misaligned`] if `root` is not 4 KiB aligned.
    /// - [`ArchError::AsidTooWide`] if PCIDs are on and `pcid` is above 0xfff.
    ///
    /// On error nothing is written and the stale mark is kept.
    ///
    /// # Safety
    ///
    /// - `root` satisfies [`write_cr3`]'s contract (a valid top-level table that maps the
    ///   running code and stack).
    /// - If `flush` is false, every translation cached for `pcid` on this CPU that is stale was
    ///   invalidated or marked through this value.
    /// - Interrupts are off on this CPU (as during a context switch), so no invalidation can
    ///   mark `pcid` between the stale check and the load.
    pub unsafe fn switch_address_space(
        &self,
        root: PhysAddr,
        pcid: Asid,
        flush: bool,
    ) -> Result<(), ArchError> {
        let value = if self.pcid {
            // Built first so that an invalid request leaves the stale mark in place.
            let value = Cr3::new(root, pcid, true)?;
            let stale = self.stale.take(pcid)?;
            value.with_no_flush(!(flush || stale))
        } else {
            Cr3::new(root, Asid::KERNEL, false)?
        };
        // SAFETY: CPL0 by the constructor's contract; `root` valid by the caller's; the no-flush
        // bit is set only with PCIDs on and only when neither the caller nor the stale set says
        // the PCID's entries are stale.
        unsafe { write_cr3(value) };
        Ok(())
    }

    /// Reloads CR3 with its own value, which (bit 63 reads as 0) drops every non-global
    /// translation of the current PCID.
    fn reload_cr3(&self) {
        // SAFETY: CPL0 by the constructor's contract; writing back the value just read keeps
        // the same tables and PCID, and its bit 63 is clear, so the load flushes.
        unsafe { write_cr3(read_cr3()) };
    }

    /// Decides how an invalidation by address in `asid` is done; `None` if `asid` cannot be a
    /// PCID. Marks the PCID stale when that is the way.
    fn page_target(&self, asid: Asid) -> Option<PageTarget> {
        if !self.pcid {
            return Some(PageTarget::Current);
        }
        if u64::from(asid.as_u16()) > CR3_PCID_MASK {
            return None;
        }
        if asid == self.current_pcid() {
            Some(PageTarget::Current)
        } else if self.features.has_invpcid() {
            Some(PageTarget::Invpcid(asid))
        } else {
            // Cannot fail: the PCID fits in 12 bits (checked above).
            self.stale.mark(asid).ok()?;
            Some(PageTarget::Stale)
        }
    }

    /// Invalidates the page at `va` as `target` says.
    fn invalidate_one(&self, target: PageTarget, va: VirtAddr) {
        if !va.is_canonical_in(self.width) {
            // No translation exists for an address the paging mode cannot translate, and
            // INVPCID type 0 would fault on it.
            return;
        }
        if let PageTarget::Invpcid(pcid) = target {
            if let Ok(desc) = InvpcidDescriptor::new(pcid, va) {
                // SAFETY: CPL0 by the constructor's contract; the CPU has INVPCID (the
                // features, by the constructor's contract); the address is canonical for the
                // paging mode (checked above) and PCIDs are on (`Invpcid` targets exist only
                // then), so a nonzero PCID is allowed.
                unsafe { invpcid(InvpcidKind::IndividualAddress, &desc) };
            }
        }
        // SAFETY: CPL0 by the constructor's contract.
        unsafe { invlpg(va) };
    }
}

impl TlbOps for X86Tlb {
    fn caps(&self) -> TlbCaps {
        let bits = if self.pcid { PCID_BITS } else { 0 };
        TlbCaps::new(false, false, self.pcid, bits)
    }

    fn sync(&self) {
        // x86 page-table stores are seen by the walker in program order, and every
        // invalidation below is a compiler barrier: nothing to do.
    }

    fn invalidate_page(&self, asid: Asid, va: VirtAddr, _leaf_only: bool) {
        match self.page_target(asid) {
            Some(target) => self.invalidate_one(target, va),
            None => self.invalidate_all(),
        }
    }

    /// Invalidates every `stride` page touching `[start, start + len)` (the range is widened
    /// to stride boundaries), one instruction per page: there is no ceiling here, callers
    /// switch to [`invalidate_asid`](TlbOps::invalidate_asid) for long ranges.
    fn invalidate_range(
        &self,
        asid: Asid,
        start: VirtAddr,
        len: u64,
        stride: PageSize,
        _leaf_only: bool,
    ) {
        if len == 0 {
            return;
        }
        let Some(last) = start.as_u64().checked_add(len - 1) else {
            self.invalidate_all();
            return;
        };
        let Some(target) = self.page_target(asid) else {
            self.invalidate_all();
            return;
        };
        let step = stride.bytes();
        let mut raw = start.align_down_to(stride).as_u64();
        loop {
            // Addresses in the non-canonical hole have no translations to drop.
            if let Ok(va) = VirtAddr::try_new(raw) {
                self.invalidate_one(target, va);
            }
            match raw.checked_add(step) {
                Some(next) if next <= last => raw = next,
                _ => break,
            }
        }
    }

    fn invalidate_asid(&self, asid: Asid) {
        if !self.pcid {
            // Without PCIDs only the current address space has non-global entries cached.
            self.reload_cr3();
            return;
        }
        if u64::from(asid.as_u16()) > CR3_PCID_MASK {
            self.invalidate_all();
            return;
        }
        if self.features.has_invpcid() {
            if let Ok(desc) = InvpcidDescriptor::for_pcid(asid) {
                // SAFETY: CPL0 and INVPCID present by the constructor's contract; type 1 ignores
                // the address, and PCIDs are on so a nonzero PCID is allowed.
                unsafe { invpcid(InvpcidKind::SingleContext, &desc) };
            }
        } else if asid == self.current_pcid() {
            self.reload_cr3();
        } else if self.stale.mark(asid).is_err() {
            // Unreachable (the PCID fits in 12 bits); stay correct regardless.
            self.invalidate_all();
        }
    }

    fn invalidate_all(&self) {
        // Cleared before the flush: a mark that races with this call is either cleared and
        // covered by the flush, or made after it and kept.
        self.stale.clear_all();
        if self.features.has_invpcid() {
            // SAFETY: CPL0 and INVPCID present by the constructor's contract; type 2 ignores
            // the descriptor.
            unsafe {
                invpcid(
                    InvpcidKind::AllContextsWithGlobals,
                    &InvpcidDescriptor::all(),
                )
            };
        } else {
            // SAFETY: CPL0 by the constructor's contract.
            unsafe { flush_all_by_pge_toggle() };
        }
    }

    fn complete(&self) {
        // INVLPG, INVPCID and MOV to CR3/CR4 complete before the next instruction on this CPU.
    }
}
