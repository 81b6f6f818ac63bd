//! A `leaks`-style conservative scanner: allocated elements that no word of the roots, or of
//! another reachable element, points into.

#[cfg(feature = "alloc")]
use alloc::vec::Vec;
#[cfg(feature = "alloc")]
use core::ops::Range;

/// Something whose allocated elements can be enumerated for a leak scan (a [`Zone`] or a
/// [`Kalloc`] heap).
///
/// [`Zone`]: crate::Zone
/// [`Kalloc`]: crate::Kalloc
pub trait LeakScan {
    /// Calls `f(zone name, address, size)` for every element allocated to a user (cached free
    /// elements are told apart by their state when the zone tracks states,
    /// [`ZoneFlags::CHECK_FREE`]; without it cached elements are reported as allocated, so
    /// drain the caches first).
    ///
    /// # Safety
    ///
    /// Nothing else uses the zone (allocates, frees or writes its elements) during the call.
    ///
    /// [`ZoneFlags::CHECK_FREE`]: crate::ZoneFlags::CHECK_FREE
    unsafe fn for_each_allocated(&self, f: &mut dyn FnMut(&str, usize, usize));
}

/// An allocated element nothing points to.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The zone it belongs to.
    pub zone: alloc::string::String,
    /// Its address.
    pub addr: usize,
    /// Its size in bytes.
    pub size: usize,
}

/// Finds the allocated elements of `zones` that are unreachable from `roots` (feature
/// `alloc`): a word anywhere in a root range, or in an element found reachable, that points
/// into an element (its start or its interior) makes that element reachable. Elements that
/// only point to each other (cycles) are leaks. Returned in address order.
#[cfg(feature = "alloc")]
///
/// # Safety
///
/// - every root range is readable memory (word-aligned reads are made inside it);
/// - the world is stopped: nothing allocates from, frees to or writes the zones' elements or
///   the roots during the scan.
///
/// # Examples
///
/// ```
/// use machvm_zone_alloc::{find_leaks, LeakScan, NoCpuCache, SystemPages, Zone, ZoneConfig};
///
/// let zone: Zone<_, _, 1> = Zone::new(ZoneConfig::new("nodes", 32), SystemPages::new(), NoCpuCache)?;
/// let kept = zone.alloc()?;
/// let lost = zone.alloc()?;
/// let roots = [kept.as_ptr() as usize];
/// let root_range = roots.as_ptr() as usize..roots.as_ptr() as usize + 8;
/// // SAFETY: `roots` is readable and nothing else runs.
/// let leaks = unsafe { find_leaks(&[&zone as &dyn LeakScan], &[root_range]) };
/// assert_eq!(leaks.len(), 1);
/// assert_eq!(leaks[0].addr, lost.as_ptr() as usize);
/// # Ok::<(), machvm_zone_alloc::ZoneError>(())
/// ```
pub unsafe fn find_leaks(zones: &[&dyn LeakScan], roots: &[Range<usize>]) -> Vec<Leak> {
    struct Candidate<'n> {
        zone: &'n str,
        addr: usize,
        size: usize,
    }
    let mut names: Vec<alloc::string::String> = Vec::new();
    let mut raw: Vec<(usize, usize, usize)> = Vec::new();
    for z in zones {
        // SAFETY: the caller stops the world.
        unsafe {
            z.for_each_allocated(&mut |name, addr, size| {
                let idx = match names.iter().position(|n| n == name) {
                    Some(i) => i,
                    None => {
                        names.push(name.into());
                        names.len() - 1
                    }
                };
                raw.push((addr, size, idx));
            });
        }
    }
    raw.sort_unstable_by_key(|&(addr, _, _)| addr);
    let cands: Vec<Candidate<'_>> = raw
        .iter()
        .map(|&(addr, size, idx)| Candidate {
            zone: names[idx].as_str(),
            addr,
            size,
        })
        .collect();
    let find = |v: usize| -> Option<usize> {
        let i = cands.partition_point(|c| c.addr <= v).checked_sub(1)?;
        let c = &cands[i];
        (v < c.addr + c.size.max(1)).then_some(i)
    };
    let mut reached = alloc::vec![false; cands.len()];
    let mut work: Vec<usize> = Vec::new();
    let scan = |range: Range<usize>, reached: &mut Vec<bool>, work: &mut Vec<usize>| {
        let word = size_of::<usize>();
        let mut at = range.start.next_multiple_of(word);
        while at + word <= range.end {
            // SAFETY: `at` is word-aligned and inside a readable range (a root, by the
            // caller's contract, or an allocated element of a zone, which stays mapped).
            let v = unsafe { core::ptr::with_exposed_provenance::<usize>(at).read() };
            if let Some(i) = find(v) {
                if !reached[i] {
                    reached[i] = true;
                    work.push(i);
                }
            }
            at += word;
        }
    };
    for r in roots {
        scan(r.clone(), &mut reached, &mut work);
    }
    while let Some(i) = work.pop() {
        let c = &cands[i];
        scan(c.addr..c.addr + c.size, &mut reached, &mut work);
    }
    cands
        .iter()
        .zip(&reached)
        .filter(|(_, r)| !**r)
        .map(|(c, _)| Leak {
            zone: c.zone.into(),
            addr: c.addr,
            size: c.size,
        })
        .collect()
}
