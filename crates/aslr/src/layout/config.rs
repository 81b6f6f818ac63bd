//! Layout configurations: the regions, their sizes, alignments and windows per architecture,
//! VA size and page size.

use core::fmt;

use machvm_addr::{PageSize, VaWidth};

use crate::{AslrError, VaRange};

/// The architecture a layout is built for.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// `x86_64` with 4-level (47-bit halves) or 5-level (56-bit halves) paging, 4 KiB pages.
    X86_64,
    /// aarch64 with 39- or 48-bit regions and 4, 16 or 64 KiB granules.
    Aarch64,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        })
    }
}

/// A randomised region of an address space.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegionKind {
    /// The kernel image (KASLR), in the upper half, 2 MiB aligned so it can be block-mapped.
    KernelText,
    /// The kernel's direct map of physical memory, aligned to the largest block size the
    /// granule offers (1 GiB with 4 KiB pages, 32 MiB with 16 KiB, 512 MiB with 64 KiB).
    DirectMap,
    /// The user PIE executable (main binary), page aligned.
    Executable,
    /// The shared-library region (the dyld shared cache), page aligned.
    SharedCache,
    /// The base of the mmap / heap area ("anywhere" allocations), page aligned.
    Mmap,
    /// The area holding the secondary threads' stacks, each with a guard gap below it.
    ThreadStacks,
    /// The main thread's stack: its top is randomised to 16 bytes (page slide plus sub-page
    /// offset); the region is the mapping below the top plus its guard gap.
    MainStack,
}

/// The number of region kinds.
pub const REGION_COUNT: usize = 7;

impl RegionKind {
    /// Every region kind, in layout order (kernel half first, then the user half bottom-up).
    pub const ALL: [Self; REGION_COUNT] = [
        Self::KernelText,
        Self::DirectMap,
        Self::Executable,
        Self::SharedCache,
        Self::Mmap,
        Self::ThreadStacks,
        Self::MainStack,
    ];

    /// Returns the position of the kind in [`ALL`](Self::ALL).
    #[inline]
    pub const fn index(self) -> usize {
        match self {
            Self::KernelText => 0,
            Self::DirectMap => 1,
            Self::Executable => 2,
            Self::SharedCache => 3,
            Self::Mmap => 4,
            Self::ThreadStacks => 5,
            Self::MainStack => 6,
        }
    }

    /// Returns whether the region lives in the kernel (upper) half.
    #[inline]
    pub const fn is_kernel(self) -> bool {
        matches!(self, Self::KernelText | Self::DirectMap)
    }

    /// Returns the name used in reports.
    #[inline]
    pub const fn name(self) -> &'static str {
        match self {
            Self::KernelText => "kernel text",
            Self::DirectMap => "direct map",
            Self::Executable => "executable (PIE)",
            Self::SharedCache => "shared cache",
            Self::Mmap => "mmap base",
            Self::ThreadStacks => "thread stacks",
            Self::MainStack => "main stack",
        }
    }
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// How a region's window is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WindowSize {
    /// `size + 2^bits * align` bytes: exactly `2^bits` non-zero slides.
    Bits(u8),
    /// A window of this many bytes (the `x86_64` kernel text, fixed by the code model).
    Bytes(u64),
}

/// The size, alignment and window design of one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionSpec {
    size: u64,
    align: u64,
    window: WindowSize,
}

impl RegionSpec {
    /// Returns the region size in bytes (for the main stack: stack plus guard gap).
    #[inline]
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// Returns the alignment of the randomised address in bytes.
    #[inline]
    pub const fn align(&self) -> u64 {
        self.align
    }

    /// Returns the designed entropy in whole bits, if the window is sized by bits (the
    /// `x86_64` kernel text window is sized in bytes instead).
    #[inline]
    pub const fn design_bits(&self) -> Option<u8> {
        match self.window {
            WindowSize::Bits(b) => Some(b),
            WindowSize::Bytes(_) => None,
        }
    }
}

/// The most bits a window can be designed for (a 56-bit half cannot hold more positions).
pub const MAX_DESIGN_BITS: u8 = 56;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The lowest user address: the first 4 GiB stay unmapped (a null-pointer and
/// truncated-pointer guard, like XNU's 64-bit `__PAGEZERO`).
pub const USER_FLOOR: u64 = 4 * GIB;
/// The top of the kernel half kept for fixed mappings (fixmap, modules): the kernel-text window
/// ends `2^64 - KERNEL_TOP_RESERVE`.
pub const KERNEL_TOP_RESERVE: u64 = 512 * MIB;
/// The lowest kernel-text address on `x86_64`: the kernel code model (`-mcmodel=kernel`) needs
/// the image in the top 2 GiB.
pub const X86_64_KERNEL_TEXT_FLOOR: u64 = (2 * GIB).wrapping_neg();

/// The configuration of a layout: architecture, VA size, page size, and every region's size,
/// alignment and window.
///
/// Windows are carved deterministically (see [`windows`](Self::windows)): user regions
/// bottom-up from [`USER_FLOOR`] in the order executable, shared cache, mmap, thread stacks,
/// separated by guard gaps; the main stack at the top of the user half below a guard page; the
/// direct map at the bottom of the kernel half and the kernel text at its top. A window
/// designed for `b` bits is `size + 2^b * align` bytes long, so the region has exactly `2^b`
/// non-zero slides in it (fewer when reserved ranges take some away).
///
/// # Default windows (entropy in bits; the floors of [`Policy::default_for`] in brackets)
///
/// | config | kernel text | direct map | executable | shared cache | mmap | threads | stack |
/// |---|---|---|---|---|---|---|---|
/// | `x86_64` 47-bit | 9.55 \[9\] | 15 | 28 \[16\] | 24 | 30 \[28\] | 28 | 30 |
/// | `x86_64` 56-bit | 9.55 \[9\] | 20 | 32 \[16\] | 28 | 34 \[28\] | 32 | 34 |
/// | aarch64 48-bit 4K | 16 \[9\] | 12 | 28 \[16\] | 24 | 30 \[28\] | 28 | 30 |
/// | aarch64 48-bit 16K | 16 \[9\] | 16 | 26 \[16\] | 22 | 28 \[26\] | 26 | 28 |
/// | aarch64 48-bit 64K | 16 \[9\] | 12 | 24 \[16\] | 20 | 26 \[24\] | 24 | 28 |
/// | aarch64 39-bit 4K | 12 \[9\] | 7 | 22 \[16\] | 18 | 24 \[18\] | 22 | 26 |
/// | aarch64 39-bit 16K | 12 \[9\] | 12 | 20 \[16\] | 16 | 22 \[16\] | 20 | 24 |
/// | aarch64 39-bit 64K | 12 \[9\] | 8 | 18 \[16\] | 14 | 20 \[14\] | 18 | 24 |
///
/// The `x86_64` kernel text window is `[-2 GiB, -512 MiB)` with 2 MiB slots: 752 positions
/// for the default 32 MiB image. The mmap figures sit between Linux's default and maximum
/// `mmap_rnd_bits` (`x86_64` 28..32; arm64 48-bit 28/26/24 by granule, up to 33/31/29; arm64
/// 39-bit at its maximum, 24/22/20) and above XNU's 16-bit executable and 8-bit dyld slides.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, VaWidth};
/// use machvm_aslr::{LayoutConfig, RegionKind};
///
/// let config = LayoutConfig::aarch64(VaWidth::AARCH64_48, PageSize::Size16KiB)?
///     .with_size(RegionKind::Executable, 128 << 20)?
///     .with_bits(RegionKind::Mmap, 30)?;
/// assert_eq!(config.spec(RegionKind::Mmap).design_bits(), Some(30));
/// let windows = config.windows()?;
/// assert_eq!(windows[RegionKind::Executable.index()].start().as_u64(), 4 << 30);
/// # Ok::<(), machvm_aslr::AslrError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutConfig {
    arch: Arch,
    va: VaWidth,
    page: PageSize,
    specs: [RegionSpec; REGION_COUNT],
    guard_gap: u64,
    stack_guard: u64,
    threads: u32,
    thread_stack: u64,
    thread_guard: u64,
}

/// Every configuration [`LayoutConfig::new`] accepts.
pub const SUPPORTED: [(Arch, VaWidth, PageSize); 8] = [
    (Arch::X86_64, VaWidth::X86_64_4LEVEL, PageSize::Size4KiB),
    (Arch::X86_64, VaWidth::X86_64_5LEVEL, PageSize::Size4KiB),
    (Arch::Aarch64, VaWidth::AARCH64_39, PageSize::Size4KiB),
    (Arch::Aarch64, VaWidth::AARCH64_39, PageSize::Size16KiB),
    (Arch::Aarch64, VaWidth::AARCH64_39, PageSize::Size64KiB),
    (Arch::Aarch64, VaWidth::AARCH64_48, PageSize::Size4KiB),
    (Arch::Aarch64, VaWidth::AARCH64_48, PageSize::Size16KiB),
    (Arch::Aarch64, VaWidth::AARCH64_48, PageSize::Size64KiB),
];

impl LayoutConfig {
    /// Returns the default configuration of `arch` with `va`-bit halves and `page` pages.
    ///
    /// # Errors
    ///
    /// - [`AslrError::UnsupportedConfig`] for combinations outside [`SUPPORTED`].
    pub fn new(arch: Arch, va: VaWidth, page: PageSize) -> Result<Self, AslrError> {
        // (kernel text, direct map, executable, shared cache, mmap, threads, stack) bits.
        let (bits, dmap_align): ([u8; REGION_COUNT], u64) = match (arch, va.bits(), page) {
            (Arch::X86_64, 47, PageSize::Size4KiB) => ([0, 15, 28, 24, 30, 28, 30], GIB),
            (Arch::X86_64, 56, PageSize::Size4KiB) => ([0, 20, 32, 28, 34, 32, 34], GIB),
            (Arch::Aarch64, 48, PageSize::Size4KiB) => ([16, 12, 28, 24, 30, 28, 30], GIB),
            (Arch::Aarch64, 48, PageSize::Size16KiB) => ([16, 16, 26, 22, 28, 26, 28], 32 * MIB),
            (Arch::Aarch64, 48, PageSize::Size64KiB) => ([16, 12, 24, 20, 26, 24, 28], 512 * MIB),
            (Arch::Aarch64, 39, PageSize::Size4KiB) => ([12, 7, 22, 18, 24, 22, 26], GIB),
            (Arch::Aarch64, 39, PageSize::Size16KiB) => ([12, 12, 20, 16, 22, 20, 24], 32 * MIB),
            (Arch::Aarch64, 39, PageSize::Size64KiB) => ([12, 8, 18, 14, 20, 18, 24], 512 * MIB),
            _ => {
                return Err(AslrError::UnsupportedConfig {
                    arch,
                    va_bits: va.bits(),
                    page,
                });
            }
        };
        let p = page.bytes();
        let (threads, thread_stack, thread_guard) = (64u32, 512 * KIB, 64 * KIB);
        let stack_guard = MIB;
        let spec = |size: u64, align: u64, b: u8| RegionSpec {
            size,
            align,
            window: WindowSize::Bits(b),
        };
        let kernel_text = match arch {
            // [-2 GiB, -512 MiB): the code model's limit below, fixed mappings above.
            Arch::X86_64 => RegionSpec {
                size: 32 * MIB,
                align: 2 * MIB,
                window: WindowSize::Bytes(2 * GIB - KERNEL_TOP_RESERVE),
            },
            Arch::Aarch64 => spec(32 * MIB, 2 * MIB, bits[0]),
        };
        let specs = [
            kernel_text,
            spec(64 * GIB, dmap_align, bits[1]),
            spec(64 * MIB, p, bits[2]),
            spec(4 * GIB, p, bits[3]),
            spec(va.half_size() / 8, p, bits[4]),
            spec(
                u64::from(threads) * (thread_stack + thread_guard),
                p,
                bits[5],
            ),
            spec(8 * MIB + stack_guard, 16, bits[6]),
        ];
        Ok(Self {
            arch,
            va,
            page,
            specs,
            guard_gap: GIB,
            stack_guard,
            threads,
            thread_stack,
            thread_guard,
        })
    }

    /// Returns the default `x86_64` configuration for 47-bit ([`VaWidth::X86_64_4LEVEL`]) or
    /// 56-bit ([`VaWidth::X86_64_5LEVEL`]) halves.
    ///
    /// # Errors
    ///
    /// - [`AslrError::UnsupportedConfig`] for any other width.
    pub fn x86_64(va: VaWidth) -> Result<Self, AslrError> {
        Self::new(Arch::X86_64, va, PageSize::Size4KiB)
    }

    /// Returns the default aarch64 configuration for 39- or 48-bit regions and a 4, 16 or
    /// 64 KiB granule.
    ///
    /// # Errors
    ///
    /// - [`AslrError::UnsupportedConfig`] for any other width or page size.
    pub fn aarch64(va: VaWidth, page: PageSize) -> Result<Self, AslrError> {
        Self::new(Arch::Aarch64, va, page)
    }

    /// Returns the architecture.
    #[inline]
    pub const fn arch(&self) -> Arch {
        self.arch
    }

    /// Returns the width of each half.
    #[inline]
    pub const fn va(&self) -> VaWidth {
        self.va
    }

    /// Returns the page size.
    #[inline]
    pub const fn page(&self) -> PageSize {
        self.page
    }

    /// Returns the specification of region `kind`.
    #[inline]
    pub const fn spec(&self, kind: RegionKind) -> RegionSpec {
        self.specs[kind.index()]
    }

    /// Returns the guard gap between neighbouring windows, in bytes.
    #[inline]
    pub const fn guard_gap(&self) -> u64 {
        self.guard_gap
    }

    /// Returns the number of thread stacks, the size of each and the guard gap below each.
    #[inline]
    pub const fn threads(&self) -> (u32, u64, u64) {
        (self.threads, self.thread_stack, self.thread_guard)
    }

    /// Returns the main stack's guard gap (below the stack), in bytes.
    #[inline]
    pub const fn stack_guard(&self) -> u64 {
        self.stack_guard
    }

    /// Checks that `bytes` is a non-zero multiple of the page size.
    fn check_pages(&self, bytes: u64) -> Result<(), AslrError> {
        if bytes == 0 {
            return Err(AslrError::ZeroSize);
        }
        if bytes % self.page.bytes() != 0 {
            return Err(AslrError::UnalignedSize {
                size: bytes,
                page: self.page,
            });
        }
        Ok(())
    }

    /// Sets the size of region `kind` in bytes: the image size for the kernel text and the
    /// executable, the physical span for the direct map, the cache size, the mmap area, the
    /// stack size (without its guard) for the main stack. Thread stacks are sized with
    /// [`with_threads`](Self::with_threads).
    ///
    /// # Errors
    ///
    /// - [`AslrError::ZeroSize`] / [`AslrError::UnalignedSize`] if `bytes` is zero or not a
    ///   multiple of the page size.
    /// - [`AslrError::BadRegionSetting`] for [`RegionKind::ThreadStacks`] or a size that
    ///   overflows with the guard.
    pub fn with_size(mut self, kind: RegionKind, bytes: u64) -> Result<Self, AslrError> {
        self.check_pages(bytes)?;
        let size = match kind {
            RegionKind::ThreadStacks => return Err(AslrError::BadRegionSetting { region: kind }),
            RegionKind::MainStack => bytes
                .checked_add(self.stack_guard)
                .ok_or(AslrError::BadRegionSetting { region: kind })?,
            _ => bytes,
        };
        self.specs[kind.index()].size = size;
        Ok(self)
    }

    /// Designs the window of region `kind` for `bits` bits: `size + 2^bits * align` bytes.
    ///
    /// # Errors
    ///
    /// - [`AslrError::BadRegionSetting`] if `bits` is zero or above [`MAX_DESIGN_BITS`].
    pub fn with_bits(mut self, kind: RegionKind, bits: u8) -> Result<Self, AslrError> {
        if bits == 0 || bits > MAX_DESIGN_BITS {
            return Err(AslrError::BadRegionSetting { region: kind });
        }
        self.specs[kind.index()].window = WindowSize::Bits(bits);
        Ok(self)
    }

    /// Sets the thread-stack area: `count` stacks of `stack` bytes, each with `guard` bytes of
    /// unmapped guard below it.
    ///
    /// # Errors
    ///
    /// - [`AslrError::ZeroSize`] / [`AslrError::UnalignedSize`] if `stack` or `guard` is zero
    ///   or not a page multiple.
    /// - [`AslrError::BadRegionSetting`] if `count` is zero or the area size overflows.
    pub fn with_threads(mut self, count: u32, stack: u64, guard: u64) -> Result<Self, AslrError> {
        self.check_pages(stack)?;
        self.check_pages(guard)?;
        let bad = AslrError::BadRegionSetting {
            region: RegionKind::ThreadStacks,
        };
        if count == 0 {
            return Err(bad);
        }
        let size = stack
            .checked_add(guard)
            .and_then(|s| s.checked_mul(u64::from(count)))
            .ok_or(bad)?;
        self.specs[RegionKind::ThreadStacks.index()].size = size;
        (self.threads, self.thread_stack, self.thread_guard) = (count, stack, guard);
        Ok(self)
    }

    /// Sets the guard gap between neighbouring windows.
    ///
    /// # Errors
    ///
    /// - [`AslrError::ZeroSize`] / [`AslrError::UnalignedSize`] if `bytes` is zero or not a
    ///   page multiple.
    pub fn with_guard_gap(mut self, bytes: u64) -> Result<Self, AslrError> {
        self.check_pages(bytes)?;
        self.guard_gap = bytes;
        Ok(self)
    }

    /// Returns the bytes the placement of `kind` occupies inside its window: the region size,
    /// plus one page of slack for the main stack (its top moves by 16 bytes, its mapping by
    /// pages).
    pub(crate) const fn footprint(&self, kind: RegionKind) -> u64 {
        let s = self.specs[kind.index()].size;
        match kind {
            RegionKind::MainStack => s + self.page.bytes(),
            _ => s,
        }
    }

    /// Returns the window length of `kind`, or `None` on overflow.
    fn window_len(&self, kind: RegionKind) -> Option<u64> {
        let spec = self.specs[kind.index()];
        match spec.window {
            WindowSize::Bytes(len) => Some(len),
            WindowSize::Bits(b) => 1u64
                .checked_shl(u32::from(b))
                .and_then(|n| n.checked_mul(spec.align))
                .and_then(|n| n.checked_add(self.footprint(kind))),
        }
    }

    /// Returns every region's window, indexed by [`RegionKind::index`].
    ///
    /// # Errors
    ///
    /// - [`AslrError::LayoutDoesNotFit`] naming the first region whose window runs out of its
    ///   half (or, for the `x86_64` kernel text, below the top 2 GiB).
    pub fn windows(&self) -> Result<[VaRange; REGION_COUNT], AslrError> {
        let no_fit = |region| AslrError::LayoutDoesNotFit { region };
        let half = self.va.half_size();
        let mut out = [VaRange::from_raw_unchecked(0, 1); REGION_COUNT];

        // User half, bottom-up.
        let mut cursor = USER_FLOOR;
        for kind in [
            RegionKind::Executable,
            RegionKind::SharedCache,
            RegionKind::Mmap,
            RegionKind::ThreadStacks,
        ] {
            let align = self.specs[kind.index()].align;
            let start = align_up(cursor, align).ok_or(no_fit(kind))?;
            let len = self.window_len(kind).ok_or(no_fit(kind))?;
            let end = start.checked_add(len).filter(|&e| e <= half);
            let end = end.ok_or(no_fit(kind))?;
            out[kind.index()] = VaRange::from_raw(start, len).map_err(|_| no_fit(kind))?;
            cursor = end.checked_add(self.guard_gap).ok_or(no_fit(kind))?;
        }
        // Main stack: under a guard page at the top of the user half.
        let kind = RegionKind::MainStack;
        let top = half - self.page.bytes();
        let len = self.window_len(kind).ok_or(no_fit(kind))?;
        let start = top.checked_sub(len).filter(|&s| s >= cursor);
        let start = start.ok_or(no_fit(kind))? & !(self.specs[kind.index()].align - 1);
        out[kind.index()] = VaRange::from_raw(start, top - start).map_err(|_| no_fit(kind))?;

        // Kernel half: direct map bottom-up, kernel text below the top reserve.
        let base = half.wrapping_neg();
        let kind = RegionKind::KernelText;
        let top = KERNEL_TOP_RESERVE.wrapping_neg();
        let len = self.window_len(kind).ok_or(no_fit(kind))?;
        let align = self.specs[kind.index()].align;
        let floor = match self.arch {
            Arch::X86_64 => X86_64_KERNEL_TEXT_FLOOR,
            Arch::Aarch64 => base,
        };
        let text_start = top.checked_sub(len).filter(|&s| s >= floor);
        let text_start = text_start.ok_or(no_fit(kind))? & !(align - 1);
        if text_start < floor {
            return Err(no_fit(kind));
        }
        out[kind.index()] =
            VaRange::from_raw(text_start, top - text_start).map_err(|_| no_fit(kind))?;

        let kind = RegionKind::DirectMap;
        let align = self.specs[kind.index()].align;
        let start = base
            .checked_add(self.guard_gap)
            .and_then(|s| align_up(s, align))
            .ok_or(no_fit(kind))?;
        let len = self.window_len(kind).ok_or(no_fit(kind))?;
        let limit = text_start.checked_sub(self.guard_gap).ok_or(no_fit(kind))?;
        start
            .checked_add(len)
            .filter(|&e| e <= limit)
            .ok_or(no_fit(kind))?;
        out[kind.index()] = VaRange::from_raw(start, len).map_err(|_| no_fit(kind))?;
        Ok(out)
    }
}

/// Rounds `value` up to a power-of-two `align`, or `None` on overflow.
#[inline]
const fn align_up(value: u64, align: u64) -> Option<u64> {
    match value.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Entropy floors: the least entropy each region must have in a layout.
///
/// A layout whose randomised region has fewer than `2^floor` positions fails to build with
/// [`AslrError::BelowPolicy`]. Regions left unrandomised on purpose (a
/// [`Personality::NoRandomize`](crate::Personality::NoRandomize) process, KASLR switched off)
/// are the caller's explicit decision and are not checked; they report 0 bits.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, VaWidth};
/// use machvm_aslr::{LayoutConfig, Policy, RegionKind};
///
/// let c = LayoutConfig::aarch64(VaWidth::AARCH64_48, PageSize::Size16KiB)?;
/// let p = Policy::default_for(&c);
/// assert_eq!(p.floor(RegionKind::Mmap), Some(26));
/// assert_eq!(p.floor(RegionKind::Executable), Some(16));
/// assert_eq!(p.floor(RegionKind::KernelText), Some(9));
/// assert_eq!(p.with_floor(RegionKind::MainStack, 20).floor(RegionKind::MainStack), Some(20));
/// # Ok::<(), machvm_aslr::AslrError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    floors: [Option<u8>; REGION_COUNT],
}

impl Policy {
    /// Returns a policy without floors.
    #[inline]
    pub const fn none() -> Self {
        Self {
            floors: [None; REGION_COUNT],
        }
    }

    /// Returns the default floors for `config`: kernel text 9 bits, executable 16 bits, and
    /// user mmap 28 bits on `x86_64` and aarch64 48-bit 4K, 26 with 16K, 24 with 64K (Linux's
    /// current arm64 defaults); aarch64 39-bit 18/16/14 (Linux's `mmap_rnd_bits` minimum for
    /// that VA size, where the maximum is only 24/22/20).
    pub const fn default_for(config: &LayoutConfig) -> Self {
        let mmap = match (config.arch, config.va.bits(), config.page) {
            (Arch::Aarch64, 39, PageSize::Size4KiB) => 18,
            (Arch::Aarch64, 39, PageSize::Size16KiB) => 16,
            (Arch::Aarch64, 39, _) => 14,
            (Arch::Aarch64, _, PageSize::Size16KiB) => 26,
            (Arch::Aarch64, _, PageSize::Size64KiB) => 24,
            _ => 28,
        };
        Self::none()
            .with_floor(RegionKind::KernelText, 9)
            .with_floor(RegionKind::Executable, 16)
            .with_floor(RegionKind::Mmap, mmap)
    }

    /// Returns the policy with the floor of `kind` set to `bits` (capped at 63).
    #[inline]
    #[must_use]
    pub const fn with_floor(mut self, kind: RegionKind, bits: u8) -> Self {
        self.floors[kind.index()] = Some(if bits > 63 { 63 } else { bits });
        self
    }

    /// Returns the policy without a floor for `kind`.
    #[inline]
    #[must_use]
    pub const fn without_floor(mut self, kind: RegionKind) -> Self {
        self.floors[kind.index()] = None;
        self
    }

    /// Returns the floor of `kind` in whole bits, if any.
    #[inline]
    pub const fn floor(&self, kind: RegionKind) -> Option<u8> {
        self.floors[kind.index()]
    }
}
