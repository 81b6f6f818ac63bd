//! Resident pages: their state bits and per-state counts.

use machvm_addr::PhysAddr;

bitflags::bitflags! {
    /// The state of a resident page (XNU's `vm_page` bits that matter to an object).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct PageFlags: u16 {
        /// Being paged in, paged out or copied: faults on it wait, nothing removes it.
        const BUSY = 1 << 0;
        /// A placeholder whose data has not arrived yet (set with `BUSY` during a page-in).
        const ABSENT = 1 << 1;
        /// Modified since it was last written to its pager (or never written).
        const DIRTY = 1 << 2;
        /// The pager wants it back even when clean (its copy is the only one).
        const PRECIOUS = 1 << 3;
        /// Accessed since the reference bit was last cleared (pageout aging).
        const REFERENCED = 1 << 4;
        /// Brought in by read-ahead and not used yet; aged out first.
        const SPECULATIVE = 1 << 5;
    }
}

/// A resident page of an object: its frame, state bits and wire count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmPage {
    /// The physical frame holding the page.
    pub frame: PhysAddr,
    /// State bits.
    pub flags: PageFlags,
    /// How many wirings hold the page resident (0: pageable).
    pub wire_count: u16,
}

impl VmPage {
    /// A resident, unwired page in `frame` with `flags`.
    #[must_use]
    pub const fn new(frame: PhysAddr, flags: PageFlags) -> Self {
        Self {
            frame,
            flags,
            wire_count: 0,
        }
    }

    /// Returns whether the page is busy.
    #[must_use]
    pub const fn is_busy(&self) -> bool {
        self.flags.contains(PageFlags::BUSY)
    }

    /// Returns whether the page is wired.
    #[must_use]
    pub const fn is_wired(&self) -> bool {
        self.wire_count > 0
    }
}

/// Resident page counts of one object, by state (what `vm_stat` adds up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageCounts {
    /// Resident pages (busy ones included).
    pub resident: u64,
    /// Busy pages.
    pub busy: u64,
    /// Dirty pages.
    pub dirty: u64,
    /// Precious pages.
    pub precious: u64,
    /// Referenced pages.
    pub referenced: u64,
    /// Speculative (read-ahead) pages.
    pub speculative: u64,
    /// Wired pages (wire count above zero).
    pub wired: u64,
}

impl PageCounts {
    /// Counts one page with `page`'s state in (`add`) or out.
    pub(crate) fn account(&mut self, page: &VmPage, add: bool) {
        let f = page.flags;
        let bump = |n: &mut u64, on: bool| {
            if on {
                *n = if add { *n + 1 } else { n.saturating_sub(1) };
            }
        };
        bump(&mut self.resident, true);
        bump(&mut self.busy, f.contains(PageFlags::BUSY));
        bump(&mut self.dirty, f.contains(PageFlags::DIRTY));
        bump(&mut self.precious, f.contains(PageFlags::PRECIOUS));
        bump(&mut self.referenced, f.contains(PageFlags::REFERENCED));
        bump(&mut self.speculative, f.contains(PageFlags::SPECULATIVE));
        bump(&mut self.wired, page.wire_count > 0);
    }
}
