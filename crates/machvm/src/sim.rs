//! A host machine simulator (feature `std`): a [`VmSystem`] over simulated physical memory,
//! and simulated CPUs that load, store and fetch through a software TLB and the MMU's walk of
//! the real page tables, taking faults into the system.
//!
//! - Memory is a [`SimPhysMemory`] shared through [`SimMemory`]; page tables are allocated from
//!   it, and a run of it is donated to the system for data pages.
//! - Each CPU translates through `machvm-tlb`'s [`SoftTlb`], which checks every access against
//!   a fresh walk: a translation used after the page table changed without the invalidation it
//!   needed is reported ([`SimFault::Stale`]), never silently used.
//! - The walk is a [`TableReader`] per address space: it reads the table without the system's
//!   lock, concurrently with the system's edits, as the MMU does.
//! - A CPU holds its *gate* while it translates and accesses memory; every TLB flush of the
//!   system waits for every gate after invalidating (the acknowledgement of a shootdown IPI),
//!   so a frame or page table freed after a flush is never in use by a CPU. CPUs may run on
//!   separate host threads.
//!
//! # Examples
//!
//! ```
//! use machvm::sim::SimMachine;
//! use machvm_page_table::X86Pml4;
//! use machvm_vm_map::MapRequest;
//!
//! let machine = SimMachine::<X86Pml4>::new(64, 2)?;
//! let space = machine.create_space()?;
//! let addr = machine.vm().mmap(space, MapRequest::anonymous(0x4000))?.as_u64();
//! machine.store(0, space, addr + 5, 42)?; // faults: zero fill
//! assert_eq!(machine.load(1, space, addr + 5)?, 42); // the other CPU
//! assert_eq!(machine.vm().counters().zero_fill, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use machvm_addr::{
    AddrError, FrameAllocator, FrameRequest, PhysAddr, PhysMapper, SimPhysMemory, VirtAddr, VmProt,
};
use machvm_page_table::{FlushHook, FlushRange, Format, Region, TableReader};
use machvm_sync::CpuIndex;
use machvm_tlb::soft::{Access, SoftTlb, SoftTlbError, UpdateWindow, Walked};
use machvm_tlb::{Asid, TlbFlush};

use crate::frames::SpaceId;
use crate::system::{FlushProvider, VmError, VmSystem};

/// A shared handle to simulated physical memory: the mapper and the page-table frame
/// allocator of a simulated system.
#[derive(Clone, Debug)]
pub struct SimMemory(Arc<SimPhysMemory>);

impl SimMemory {
    /// A handle to `memory`.
    #[must_use]
    pub fn new(memory: SimPhysMemory) -> Self {
        Self(Arc::new(memory))
    }

    /// The memory.
    #[must_use]
    pub fn memory(&self) -> &SimPhysMemory {
        &self.0
    }
}

// SAFETY: forwarded to the `SimPhysMemory`, which keeps the promises; every clone reaches the
// same buffer, which lives as long as any handle.
unsafe impl PhysMapper for SimMemory {
    fn phys_to_ptr(&self, pa: PhysAddr, len: usize) -> Result<NonNull<u8>, AddrError> {
        self.0.phys_to_ptr(pa, len)
    }
}

// SAFETY: forwarded to `&SimPhysMemory`'s allocator (shared, internally synchronised): every
// clone allocates from the one free map, so no frame is handed out twice.
unsafe impl FrameAllocator for SimMemory {
    fn allocate(&mut self, request: FrameRequest) -> Result<PhysAddr, AddrError> {
        SimPhysMemory::allocate(&self.0, request)
    }

    unsafe fn deallocate(
        &mut self,
        start: PhysAddr,
        request: FrameRequest,
    ) -> Result<(), AddrError> {
        // SAFETY: forwarded; our caller upholds the contract.
        unsafe { SimPhysMemory::deallocate(&self.0, start, request) }
    }

    fn zeroes_frames(&self) -> bool {
        let memory: &SimPhysMemory = &self.0;
        FrameAllocator::zeroes_frames(&memory)
    }
}

/// The CPUs' gates (see the [module documentation](self)).
#[derive(Debug)]
struct Gates(Vec<Mutex<()>>);

impl Gates {
    /// Waits until no CPU is in the middle of an access.
    fn ack_all(&self) {
        for gate in &self.0 {
            drop(gate.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }
}

/// The flush hook of one simulated address space: invalidates on every CPU's TLB, then
/// waits for every CPU to acknowledge.
#[derive(Debug)]
pub struct SimFlush {
    tlb: Arc<SoftTlb>,
    gates: Arc<Gates>,
    asid: Asid,
}

impl FlushHook for SimFlush {
    fn sync(&mut self) {
        if let Ok(ops) = self.tlb.broadcast(CpuIndex::new(0)) {
            TlbFlush::new(&ops, self.asid).sync();
        }
    }

    fn invalidate(&mut self, range: &FlushRange) {
        if let Ok(ops) = self.tlb.broadcast(CpuIndex::new(0)) {
            TlbFlush::new(&ops, self.asid).invalidate(range);
        }
        self.gates.ack_all();
    }
}

/// The [`FlushProvider`] of a simulated system.
#[derive(Debug)]
pub struct SimTlbs {
    tlb: Arc<SoftTlb>,
    gates: Arc<Gates>,
}

impl FlushProvider for SimTlbs {
    type Hook = SimFlush;

    fn hook(&self, asid: Asid) -> SimFlush {
        SimFlush {
            tlb: self.tlb.clone(),
            gates: self.gates.clone(),
            asid,
        }
    }

    fn flush_asid(&self, asid: Asid) {
        self.tlb.broadcast_invalidate_asid(asid);
        self.gates.ack_all();
    }
}

/// The [`VmSystem`] of a simulated machine.
pub type SimVm<F> = VmSystem<F, SimMemory, SimMemory, SimTlbs>;

/// Why a simulated access failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SimFault {
    /// The system refused the fault (not mapped, protection, out of memory, …) or the space
    /// does not exist.
    Vm(VmError),
    /// A CPU used a translation the page table no longer allows: a missed invalidation (a
    /// bug in the VM layer).
    Stale(SoftTlbError),
    /// The access made no progress after several faults.
    NoProgress {
        /// The address.
        va: u64,
    },
    /// The CPU number is out of range.
    BadCpu(usize),
}

impl fmt::Display for SimFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vm(e) => write!(f, "{e}"),
            Self::Stale(e) => write!(f, "{e}"),
            Self::NoProgress { va } => write!(f, "no progress faulting at {va:#x}"),
            Self::BadCpu(cpu) => write!(f, "no cpu {cpu}"),
        }
    }
}

impl core::error::Error for SimFault {}

impl From<VmError> for SimFault {
    fn from(e: VmError) -> Self {
        Self::Vm(e)
    }
}

/// Why a simulated machine could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum SimSetupError {
    /// The simulated memory could not be created or frames not taken from it.
    Memory(AddrError),
    /// The software TLB refused the CPU count.
    Tlb(SoftTlbError),
    /// The system refused the frames.
    Vm(VmError),
}

impl fmt::Display for SimSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory(e) => write!(f, "simulated memory: {e}"),
            Self::Tlb(e) => write!(f, "software TLB: {e}"),
            Self::Vm(e) => write!(f, "VM system: {e}"),
        }
    }
}

impl core::error::Error for SimSetupError {}

/// The locked system of a [`SimMachine`] (see [`SimMachine::vm`]).
pub struct VmGuard<'a, F: Format> {
    guard: MutexGuard<'a, SimVm<F>>,
    _windows: Vec<UpdateWindow<'a>>,
}

impl<F: Format> fmt::Debug for VmGuard<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmGuard")
            .field("windows", &self._windows.len())
            .finish_non_exhaustive()
    }
}

impl<F: Format> core::ops::Deref for VmGuard<'_, F> {
    type Target = SimVm<F>;

    fn deref(&self) -> &SimVm<F> {
        &self.guard
    }
}

impl<F: Format> core::ops::DerefMut for VmGuard<'_, F> {
    fn deref_mut(&mut self) -> &mut SimVm<F> {
        &mut self.guard
    }
}

/// The first user address of simulated spaces.
pub const SIM_USER_START: u64 = 0x1000_0000;
/// The end of the user addresses of simulated spaces (4 GiB above the start).
pub const SIM_USER_END: u64 = SIM_USER_START + (4 << 30);

/// The ASID of a space and the MMU's view of its page table.
type Walker<F> = (Asid, Arc<TableReader<F, SimMemory>>);

/// A simulated machine (see the [module documentation](self)). Every method takes `&self`:
/// CPUs may run on several host threads.
pub struct SimMachine<F: Format> {
    vm: Mutex<SimVm<F>>,
    tlb: Arc<SoftTlb>,
    gates: Arc<Gates>,
    memory: SimMemory,
    readers: RwLock<BTreeMap<SpaceId, Walker<F>>>,
}

impl<F: Format> fmt::Debug for SimMachine<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimMachine")
            .field("format", &F::NAME)
            .field("cpus", &self.gates.0.len())
            .finish_non_exhaustive()
    }
}

impl<F: Format> SimMachine<F> {
    /// A machine with `frames` data frames (plus memory for page tables) and `cpus` CPUs,
    /// whose spaces map user addresses in `[SIM_USER_START, SIM_USER_END)`.
    ///
    /// # Errors
    ///
    /// [`SimSetupError`] when the memory, the TLB or the donation fails.
    pub fn new(frames: u32, cpus: usize) -> Result<Self, SimSetupError> {
        let page = F::GRANULE.bytes();
        let bytes = u64::from(frames) * page + (4 << 20);
        let memory = SimPhysMemory::builder()
            .size_bytes(bytes)
            .build()
            .map_err(SimSetupError::Memory)?;
        let memory = SimMemory::new(memory);
        let tlb = Arc::new(SoftTlb::new(cpus, 16, 4).map_err(SimSetupError::Tlb)?);
        let gates = Arc::new(Gates((0..cpus).map(|_| Mutex::new(())).collect()));
        let flush = SimTlbs {
            tlb: tlb.clone(),
            gates: gates.clone(),
        };
        let mut vm = SimVm::<F>::new(
            memory.clone(),
            memory.clone(),
            flush,
            VirtAddr::new(SIM_USER_START),
            VirtAddr::new(SIM_USER_END),
        );
        let request =
            FrameRequest::new(F::GRANULE, u64::from(frames)).map_err(SimSetupError::Memory)?;
        let run = memory
            .clone()
            .allocate(request)
            .map_err(SimSetupError::Memory)?;
        vm.donate(run, frames).map_err(SimSetupError::Vm)?;
        Ok(Self {
            vm: Mutex::new(vm),
            tlb,
            gates,
            memory,
            readers: RwLock::new(BTreeMap::new()),
        })
    }

    /// The system, locked (for VM calls: `mmap`, `pageout_step`, reports, …). Do not hold
    /// the guard across a CPU access of the same thread.
    ///
    /// While the guard lives, the software TLB tolerates the use of translations of the live
    /// spaces that the system is changing: on a real machine another CPU may use an old
    /// translation between the page-table write and the end of the shootdown. Any use of a
    /// stale translation after the guard is dropped (a missed invalidation) is reported.
    pub fn vm(&self) -> VmGuard<'_, F> {
        let guard = self.vm.lock().unwrap_or_else(PoisonError::into_inner);
        let windows = self
            .readers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|(asid, _)| {
                self.tlb.begin_update(
                    *asid,
                    VirtAddr::new(SIM_USER_START),
                    SIM_USER_END - SIM_USER_START,
                )
            })
            .collect();
        VmGuard {
            guard,
            _windows: windows,
        }
    }

    /// The software TLB (its statistics count hits, misses, invalidations, stale uses).
    #[must_use]
    pub fn tlb(&self) -> &SoftTlb {
        &self.tlb
    }

    /// The simulated memory.
    #[must_use]
    pub fn memory(&self) -> &SimPhysMemory {
        self.memory.memory()
    }

    fn register(&self, vm: &SimVm<F>, id: SpaceId) -> Result<(), VmError> {
        let asid = vm.asid(id)?;
        let root = vm.map(id)?.pmap().table().root();
        let region = if F::supports_region(Region::Both) {
            Region::Both
        } else {
            Region::Lower
        };
        // SAFETY: the table at `root` is the space's live page table, reached through the
        // same memory; its frames are freed only after a flush, which waits for every CPU's
        // gate, and CPUs walk only while holding their gate; the reader is removed (and
        // every gate acknowledged) before the space and its root are destroyed.
        let reader = unsafe { TableReader::new(root, region, self.memory.clone()) }
            .map_err(|_| VmError::NoSuchSpace(id))?;
        self.readers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (asid, Arc::new(reader)));
        Ok(())
    }

    /// Creates an address space.
    ///
    /// # Errors
    ///
    /// As [`VmSystem::create_space`].
    pub fn create_space(&self) -> Result<SpaceId, VmError> {
        let mut vm = self.vm();
        let id = vm.create_space()?;
        self.register(&vm, id)?;
        Ok(id)
    }

    /// Forks `space`.
    ///
    /// # Errors
    ///
    /// As [`VmSystem::fork`].
    pub fn fork(&self, space: SpaceId) -> Result<SpaceId, VmError> {
        let mut vm = self.vm();
        let id = vm.fork(space)?;
        self.register(&vm, id)?;
        Ok(id)
    }

    /// Destroys `space` (no CPU may access it any more).
    ///
    /// # Errors
    ///
    /// As [`VmSystem::destroy_space`].
    pub fn destroy_space(&self, space: SpaceId) -> Result<(), VmError> {
        let mut vm = self.vm();
        self.readers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&space);
        // Walks that found the reader before it was removed end before their gate opens.
        self.gates.ack_all();
        vm.destroy_space(space)
    }

    /// An access of `cpu` to `va` in `space`: translated through the CPU's TLB (faulting
    /// into the system as needed); `op` runs on the physical address while the CPU's gate is
    /// held, so no flush completes meanwhile.
    fn access<R>(
        &self,
        cpu: usize,
        space: SpaceId,
        va: u64,
        access: Access,
        mut op: impl FnMut(PhysAddr) -> R,
    ) -> Result<R, SimFault> {
        let gate = self.gates.0.get(cpu).ok_or(SimFault::BadCpu(cpu))?;
        let index = CpuIndex::new(u32::try_from(cpu).map_err(|_| SimFault::BadCpu(cpu))?);
        let addr = VirtAddr::try_new(va).map_err(|_| {
            SimFault::Vm(VmError::Fault(machvm_vm_map::FaultError::NotMapped {
                addr: va,
            }))
        })?;
        // A real CPU retries for ever; other CPUs may evict the page between the fault and
        // the retry, so allow many rounds before calling it a livelock.
        for _ in 0..64 {
            let (asid, reader) = self
                .readers
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&space)
                .cloned()
                .ok_or(SimFault::Vm(VmError::NoSuchSpace(space)))?;
            {
                let _held = gate.lock().unwrap_or_else(PoisonError::into_inner);
                let walk = |v: VirtAddr| {
                    reader.translate(v).ok().map(|t| {
                        let m = t.mapping();
                        let prot = m.attrs.prot();
                        Walked::new(m.pa, m.size)
                            .with_writable(prot.contains(VmProt::WRITE))
                            .with_executable(prot.contains(VmProt::EXECUTE))
                    })
                };
                match self.tlb.translate(index, asid, addr, access, walk) {
                    Ok(t) => return Ok(op(t.pa)),
                    Err(SoftTlbError::Fault { .. }) => {}
                    Err(e) => return Err(SimFault::Stale(e)),
                }
            }
            self.vm().handle_fault(space, addr, access.prot())?;
        }
        Err(SimFault::NoProgress { va })
    }

    /// Loads the byte at `va` of `space` on `cpu`.
    ///
    /// # Errors
    ///
    /// [`SimFault`].
    pub fn load(&self, cpu: usize, space: SpaceId, va: u64) -> Result<u8, SimFault> {
        self.access(cpu, space, va, Access::Read, |pa| {
            let mut b = [0u8];
            // The frame is in the memory the walk came from.
            let _ = self.memory.memory().read_bytes(pa, &mut b);
            b[0]
        })
    }

    /// Stores `value` at `va` of `space` on `cpu`.
    ///
    /// # Errors
    ///
    /// [`SimFault`].
    pub fn store(&self, cpu: usize, space: SpaceId, va: u64, value: u8) -> Result<(), SimFault> {
        self.access(cpu, space, va, Access::Write, |pa| {
            let _ = self.memory.memory().write_bytes(pa, &[value]);
        })
    }

    /// Fetches the instruction byte at `va` of `space` on `cpu`.
    ///
    /// # Errors
    ///
    /// [`SimFault`].
    pub fn fetch(&self, cpu: usize, space: SpaceId, va: u64) -> Result<u8, SimFault> {
        self.access(cpu, space, va, Access::Execute, |pa| {
            let mut b = [0u8];
            let _ = self.memory.memory().read_bytes(pa, &mut b);
            b[0]
        })
    }
}
