//! Zone handles whose allocation and free paths are compiled for one case of the zone's flags.
//!
//! [`Zone::alloc`] and [`Zone::free`] test the zone's hardening flags on every call (one
//! dispatch on a mode computed when the zone was made). A caller that knows which flags its
//! zone has — most kernel zones are made once, with flags fixed in the code — can take a
//! [`SpecializedZone`] instead: [`Zone::specialize`] checks the flags once, and the handle's
//! paths carry only that case's checks, with no dispatch left in them.

use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::cpu::CpuLocal;
use crate::error::ZoneError;
use crate::source::PageSource;
#[cfg(doc)]
use crate::zone::ZoneFlags;
use crate::zone::{FastMode, RUNTIME, Zone};

mod sealed {
    pub trait Sealed {}
}

/// A case of the zone flags that [`Zone::specialize`] can compile the fast paths for:
/// [`ReleaseDefaultFlags`] or [`HardenedFlags`]. Sealed.
pub trait FlagCase: sealed::Sealed {
    /// The fast-path mode of the case (`FastMode as u8`, or the zone's own mode for the
    /// crate's `RuntimeFlags`).
    #[doc(hidden)]
    const MODE: u8;
}

/// The release default's case: [`ZoneFlags::CHECK_FREE`] without
/// [`ZERO_ON_FREE`](ZoneFlags::ZERO_ON_FREE) or [`READ_ONLY`](ZoneFlags::READ_ONLY), as in
/// [`ZoneFlags::RELEASE_DEFAULT`] (the other flags do not touch the fast paths).
#[derive(Debug, Clone, Copy)]
pub struct ReleaseDefaultFlags(());

/// The hardened case: [`ZoneFlags::CHECK_FREE`] and
/// [`ZERO_ON_FREE`](ZoneFlags::ZERO_ON_FREE) without [`READ_ONLY`](ZoneFlags::READ_ONLY), as
/// in [`ZoneFlags::HARDENED`] (the other flags do not touch the fast paths).
#[derive(Debug, Clone, Copy)]
pub struct HardenedFlags(());

/// The zone's own mode, read at run time (what [`Zone::alloc`] and [`Zone::free`] use).
pub(crate) struct RuntimeFlags(());

impl sealed::Sealed for ReleaseDefaultFlags {}
impl sealed::Sealed for HardenedFlags {}
impl sealed::Sealed for RuntimeFlags {}
impl FlagCase for RuntimeFlags {
    const MODE: u8 = RUNTIME;
}
impl FlagCase for ReleaseDefaultFlags {
    const MODE: u8 = FastMode::Checked as u8;
}
impl FlagCase for HardenedFlags {
    const MODE: u8 = FastMode::CheckedZeroed as u8;
}

/// A zone whose flags are known to be case `F`: its [`alloc`](Self::alloc) and
/// [`free`](Self::free) are the zone's, compiled without the test of the flags. Made by
/// [`Zone::specialize`]; a copyable borrow of the zone, so the zone's other methods
/// (statistics, [`trim`](Zone::trim), ...) stay at hand through [`zone`](Self::zone).
///
/// # Examples
///
/// ```
/// use machvm_zone_alloc::{
///     NoCpuCache, ReleaseDefaultFlags, SystemPages, Zone, ZoneConfig, ZoneFlags,
/// };
///
/// let zone: Zone<_, _, 1> = Zone::new(
///     ZoneConfig::new("vnode", 64).flags(ZoneFlags::RELEASE_DEFAULT),
///     SystemPages::new(),
///     NoCpuCache,
/// )?;
/// let vnodes = zone.specialize::<ReleaseDefaultFlags>().expect("release-default flags");
/// let p = vnodes.alloc()?;
/// // SAFETY: `p` came from this zone and is not used afterwards.
/// unsafe { vnodes.free(p)? };
/// assert_eq!(vnodes.zone().stats().alloc_count, 1);
/// # Ok::<(), machvm_zone_alloc::ZoneError>(())
/// ```
pub struct SpecializedZone<'z, S: PageSource, C: CpuLocal, const CPUS: usize, F: FlagCase> {
    zone: &'z Zone<S, C, CPUS>,
    case: PhantomData<F>,
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize, F: FlagCase> Clone
    for SpecializedZone<'_, S, C, CPUS, F>
{
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize, F: FlagCase> Copy
    for SpecializedZone<'_, S, C, CPUS, F>
{
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize, F: FlagCase> fmt::Debug
    for SpecializedZone<'_, S, C, CPUS, F>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpecializedZone")
            .field("zone", self.zone)
            .field("case", &core::any::type_name::<F>())
            .finish()
    }
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize> Zone<S, C, CPUS> {
    /// Returns a handle whose allocation and free paths are compiled for case `F` of the
    /// zone's flags, or `None` when the zone's flags are not that case (a read-only zone, or
    /// one without [`CHECK_FREE`](crate::ZoneFlags::CHECK_FREE), is neither case).
    ///
    /// See [`SpecializedZone`] for an example.
    pub fn specialize<F: FlagCase>(&self) -> Option<SpecializedZone<'_, S, C, CPUS, F>> {
        (self.fast_mode() as u8 == F::MODE).then_some(SpecializedZone {
            zone: self,
            case: PhantomData,
        })
    }
}

impl<'z, S: PageSource, C: CpuLocal, const CPUS: usize, F: FlagCase>
    SpecializedZone<'z, S, C, CPUS, F>
{
    /// Returns the zone.
    pub const fn zone(&self) -> &'z Zone<S, C, CPUS> {
        self.zone
    }

    /// [`Zone::alloc`], with the same results and errors.
    ///
    /// # Errors
    ///
    /// As for [`Zone::alloc`].
    #[inline(always)]
    pub fn alloc(&self) -> Result<NonNull<u8>, ZoneError> {
        self.zone.alloc_as::<F>()
    }

    /// [`Zone::free`], with the same checks, results and errors.
    ///
    /// # Safety
    ///
    /// As for [`Zone::free`].
    ///
    /// # Errors
    ///
    /// As for [`Zone::free`].
    #[inline(always)]
    pub unsafe fn free(&self, elem: NonNull<u8>) -> Result<(), ZoneError> {
        // SAFETY: the caller's contract.
        unsafe { self.zone.free_as::<F>(elem) }
    }
}
