//! Several simulated CPUs (host threads bound with `ThreadCpuId`) allocate, tag, check and
//! free frames of one shared `SimPhysMemory`, keeping their live frames in a `PerCpuCell`.
//!
//! Properties checked:
//! - no two live allocations overlap, whatever the interleaving;
//! - a frame's contents stay what its owner wrote until the owner frees it (no aliasing);
//! - the allocator's counters equal the sum of what the CPUs did;
//! - freeing everything returns the memory to zero frames in use.

use machvm_addr::{FrameRequest, PageSize, PhysAddr, SimPhysMemory};
use machvm_sync::{CpuIndex, PerCpu, PerCpuCell, ThreadCpuId, atomic::AtomicU64, atomic::Ordering};
use machvm_tests::SplitMix64;

const CPUS: usize = 4;
const ROUNDS: u64 = if cfg!(miri) { 20 } else { 400 };
/// Live allocations per CPU at most: 12 x 192 KiB x 4 CPUs (9 MiB) stays far below the
/// 32 MiB memory even if every 4 KiB allocation spoils a 64 KiB-aligned run.
const MAX_LIVE: usize = 12;

#[derive(Debug, Clone, Copy)]
struct Live {
    start: PhysAddr,
    request: FrameRequest,
    tag: u64,
}

fn tag_of(cpu: usize, seq: u64) -> u64 {
    ((cpu as u64) << 48) | seq
}

/// Writes `tag` into the first and last word of every 4 KiB frame of the allocation.
fn stamp(sim: &SimPhysMemory, live: &Live) {
    for frame in 0..live.request.bytes() / 4096 {
        let at = live.start.as_u64() + frame * 4096;
        sim.write_u64(PhysAddr::new(at), live.tag).unwrap();
        sim.write_u64(PhysAddr::new(at + 4088), !live.tag).unwrap();
    }
}

fn check(sim: &SimPhysMemory, live: &Live) {
    for frame in 0..live.request.bytes() / 4096 {
        let at = live.start.as_u64() + frame * 4096;
        assert_eq!(
            sim.read_u64(PhysAddr::new(at)).unwrap(),
            live.tag,
            "{live:?} frame {frame}"
        );
        assert_eq!(sim.read_u64(PhysAddr::new(at + 4088)).unwrap(), !live.tag);
    }
}

fn random_request(rng: &mut SplitMix64) -> FrameRequest {
    let size = [
        PageSize::Size4KiB,
        PageSize::Size4KiB,
        PageSize::Size16KiB,
        PageSize::Size64KiB,
    ][rng.below(4) as usize];
    FrameRequest::new(size, 1 + rng.below(3)).unwrap()
}

#[test]
fn cpus_share_one_simulated_memory_without_overlap() {
    let sim = SimPhysMemory::builder()
        .size_bytes(32 << 20)
        .base(PhysAddr::new(0x4000_0000))
        .build()
        .unwrap();
    let cpus = ThreadCpuId::new();
    let owned: PerCpuCell<Vec<Live>, CPUS> = PerCpuCell::from_fn(|_| Vec::new());
    let allocs: PerCpu<AtomicU64, CPUS> = PerCpu::from_fn(|_| AtomicU64::new(0));
    let frees: PerCpu<AtomicU64, CPUS> = PerCpu::from_fn(|_| AtomicU64::new(0));

    std::thread::scope(|s| {
        for cpu in 0..CPUS {
            let (sim, cpus, owned, allocs, frees) = (&sim, &cpus, &owned, &allocs, &frees);
            s.spawn(move || {
                let _binding = cpus.bind(CpuIndex::new(cpu as u32)).unwrap();
                let mut rng = SplitMix64::new(0x5EED + cpu as u64);
                for seq in 0..ROUNDS {
                    let step = |mine: &mut Vec<Live>| {
                        if mine.is_empty() || (mine.len() < MAX_LIVE && rng.below(3) != 0) {
                            let request = random_request(&mut rng);
                            let start = sim
                                .allocate(request)
                                .unwrap_or_else(|e| panic!("32 MiB cannot run out here: {e}"));
                            let live = Live {
                                start,
                                request,
                                tag: tag_of(cpu, seq),
                            };
                            stamp(sim, &live);
                            mine.push(live);
                            allocs
                                .current(cpus)
                                .unwrap()
                                .fetch_add(1, Ordering::Relaxed);
                        } else {
                            let victim = mine.swap_remove(rng.below(mine.len() as u64) as usize);
                            check(sim, &victim);
                            // SAFETY: the frames were allocated by this thread and nothing uses
                            // them once they are removed from `mine`.
                            unsafe { sim.deallocate(victim.start, victim.request) }.unwrap();
                            frees.current(cpus).unwrap().fetch_add(1, Ordering::Relaxed);
                        }
                    };
                    // SAFETY: this thread is bound to `cpu` for the whole loop, nothing else
                    // touches this CPU's slot while it runs, and `step` does not re-enter the
                    // cell.
                    unsafe { owned.with_current_mut(cpus, step) }.unwrap();
                }
            });
        }
    });

    let mut owned = owned.into_inner();
    let mut all: Vec<Live> = owned.iter().flatten().copied().collect();
    all.sort_by_key(|l| l.start);
    for pair in all.windows(2) {
        let end = pair[0].start.as_u64() + pair[0].request.bytes();
        assert!(
            end <= pair[1].start.as_u64(),
            "overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    for live in &all {
        check(&sim, live);
        assert_eq!(live.start.as_u64() % live.request.align().bytes(), 0);
    }
    let total_allocs: u64 = allocs.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    let total_frees: u64 = frees.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    assert_eq!(sim.allocations(), total_allocs);
    assert_eq!(sim.deallocations(), total_frees);
    let live_frames: u64 = all.iter().map(|l| l.request.bytes() / 4096).sum();
    assert_eq!(sim.frames_in_use(), live_frames);

    for live in owned.iter_mut().flat_map(|v| v.drain(..)) {
        // SAFETY: the test owns every live allocation and uses none after this point.
        unsafe { sim.deallocate(live.start, live.request) }.unwrap();
    }
    assert_eq!(sim.frames_in_use(), 0);
    assert_eq!(sim.live_allocations(), 0);
}
