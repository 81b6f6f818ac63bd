//! Reports in the style of macOS's `vm_stat` and `memory_pressure`, from live counters.

use alloc::collections::BTreeSet;
use core::fmt;

use machvm_addr::{FrameAllocator, PhysMapper};
use machvm_page_table::Format;
use machvm_vm_object::{ObjectKind, PurgeableState};

use alloc::vec::Vec;

use machvm_vm_map::MapReport;
use machvm_zone_alloc::{ZoneStats, ZprintTable};

use crate::frames::{QueueCounts, SpaceId};
use crate::pressure::{PressureLevel, PressureMonitor};
use crate::system::{FlushProvider, PagerStats, SpacePmap, VmCounters, VmError, VmSystem};

/// A `zprint` report: the zones a [`VmSystem`] was told about
/// ([`VmSystem::set_zone_source`]; a kernel gives it the zones of its `GlobalKalloc`, where the
/// system's maps, objects and frame table live), one row each.
#[derive(Clone, Debug, Default)]
pub struct Zprint {
    /// The zones' statistics, in the order the source gave them.
    pub zones: Vec<ZoneStats>,
}

impl fmt::Display for Zprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ZprintTable::new(&self.zones).fmt(f)
    }
}

/// Resident pages of the objects the address spaces map, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectPages {
    /// Pages of objects with an external pager (files, devices).
    pub file_backed: u64,
    /// Pages of anonymous objects.
    pub anonymous: u64,
    /// Pages of volatile purgeable objects.
    pub purgeable: u64,
}

/// A `vm_stat` report (see [`VmSystem::vm_stat`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct VmStat {
    /// The page size in bytes.
    pub page_size: u64,
    /// Pages on each queue.
    pub queues: QueueCounts,
    /// The event counters.
    pub counters: VmCounters,
    /// Resident object pages by kind.
    pub objects: ObjectPages,
    /// The compressor and swap counters.
    pub pager: PagerStats,
}

impl fmt::Display for VmStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = &self.queues;
        let c = &self.counters;
        let p = &self.pager;
        writeln!(
            f,
            "Mach Virtual Memory Statistics: (page size of {} bytes)",
            self.page_size
        )?;
        let rows: [(&str, u64); 22] = [
            ("Pages free:", q.free),
            ("Pages active:", q.active),
            ("Pages inactive:", q.inactive),
            ("Pages speculative:", q.speculative),
            ("Pages throttled:", q.throttled),
            ("Pages wired down:", q.wired),
            ("Pages purgeable:", self.objects.purgeable),
            ("\"Translation faults\":", c.faults),
            ("Pages copy-on-write:", c.cow_faults),
            ("Pages zero filled:", c.zero_fill),
            ("Pages reactivated:", c.reactivations),
            ("Pages purged:", c.purged),
            ("File-backed pages:", self.objects.file_backed),
            ("Anonymous pages:", self.objects.anonymous),
            ("Pages stored in compressor:", p.stored_pages),
            ("Pages occupied by compressor:", p.occupied_pages),
            ("Decompressions:", p.decompressions),
            ("Compressions:", p.compressions),
            ("Pageins:", c.pageins),
            ("Pageouts:", c.pageouts),
            ("Swapins:", p.swapins),
            ("Swapouts:", p.swapouts),
        ];
        for (label, value) in rows {
            writeln!(f, "{label:<30}{value:>20}.")?;
        }
        Ok(())
    }
}

/// A `memory_pressure` report (see [`VmSystem::memory_pressure`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct MemoryPressureReport {
    /// The page size in bytes.
    pub page_size: u64,
    /// Pages on each queue.
    pub queues: QueueCounts,
    /// The compressor counters.
    pub pager: PagerStats,
    /// Pages of volatile purgeable objects.
    pub purgeable: u64,
    /// Pages purged so far.
    pub purged: u64,
    /// The current level.
    pub level: PressureLevel,
}

impl MemoryPressureReport {
    /// Stored pages per occupied page (1.0 when nothing is compressed).
    #[must_use]
    pub fn compressor_efficiency(&self) -> (u64, u64) {
        let (s, o) = (self.pager.stored_pages, self.pager.occupied_pages);
        if s == 0 || o == 0 {
            return (10, 10);
        }
        // One decimal, rounded.
        ((s * 10 + o / 2) / o, 10)
    }
}

impl fmt::Display for MemoryPressureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = &self.queues;
        let total = q.total();
        writeln!(
            f,
            "The system has {} ({} pages with a page size of {}).",
            total * self.page_size,
            total,
            self.page_size
        )?;
        writeln!(f)?;
        writeln!(f, "Stats: ")?;
        writeln!(f, "Pages free: {} ", q.free)?;
        writeln!(f, "Pages purgeable: {} ", self.purgeable)?;
        writeln!(f, "Pages purged: {} ", self.purged)?;
        writeln!(f)?;
        writeln!(
            f,
            "Pages: free {}, active {}, inactive {}, speculative {}, wired {}, compressed {}",
            q.free, q.active, q.inactive, q.speculative, q.wired, self.pager.stored_pages
        )?;
        writeln!(f, "Memory pressure: {}", self.level)?;
        let (e, d) = self.compressor_efficiency();
        writeln!(f, "Compressor efficiency: {}.{}x", e / d, e % d)?;
        write!(
            f,
            "System-wide memory free percentage: {}%",
            PressureMonitor::available_percent(q)
        )
    }
}

impl<F, M, A, T> VmSystem<F, M, A, T>
where
    F: Format,
    M: PhysMapper + Clone + Send + Sync + 'static,
    A: FrameAllocator + Clone,
    T: FlushProvider,
{
    /// Resident pages of every object the spaces map (each object counted once, shadow
    /// chains followed), by kind.
    #[must_use]
    pub fn object_pages(&self) -> ObjectPages {
        let mut seen = BTreeSet::new();
        let mut out = ObjectPages::default();
        for id in self.spaces() {
            let Ok(map) = self.map(id) else { continue };
            for entry in map.entries() {
                let mut object = Some(entry.object().clone());
                while let Some(o) = object {
                    if !seen.insert(o.id()) {
                        break;
                    }
                    let resident = o.page_counts().resident;
                    match o.kind() {
                        ObjectKind::External => out.file_backed += resident,
                        _ => out.anonymous += resident,
                    }
                    if o.purgeable_state() == Some(PurgeableState::Volatile) {
                        out.purgeable += resident;
                    }
                    object = o.shadow().map(|s| s.object);
                }
            }
        }
        out
    }

    /// The `vm_stat` report.
    ///
    /// # Examples
    ///
    /// ```text
    /// Mach Virtual Memory Statistics: (page size of 4096 bytes)
    /// Pages free:                                    254.
    /// Pages active:                                    2.
    /// ...
    /// ```
    #[must_use]
    pub fn vm_stat(&self) -> VmStat {
        VmStat {
            page_size: self.page_size().bytes(),
            queues: self.queues(),
            counters: self.counters(),
            objects: self.object_pages(),
            pager: self.pager_stats(),
        }
    }

    /// The `vmmap` report of `space`: one line per region (type, range, virtual and resident
    /// size, protections, share mode).
    ///
    /// # Errors
    ///
    /// [`VmError::NoSuchSpace`].
    pub fn vmmap(&self, space: SpaceId) -> Result<MapReport<'_, SpacePmap<F, M, A, T>>, VmError> {
        Ok(self.map(space)?.report())
    }

    /// The `zprint` report of the zones the system was told about (empty without a zone
    /// source).
    #[must_use]
    pub fn zprint(&self) -> Zprint {
        Zprint {
            zones: self.zone_stats(),
        }
    }

    /// The `memory_pressure` report.
    #[must_use]
    pub fn memory_pressure(&self) -> MemoryPressureReport {
        MemoryPressureReport {
            page_size: self.page_size().bytes(),
            queues: self.queues(),
            pager: self.pager_stats(),
            purgeable: self.object_pages().purgeable,
            purged: self.counters().purged,
            level: self.pressure(),
        }
    }
}
