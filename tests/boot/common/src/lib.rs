//! The architecture-neutral half of the machvm QEMU smoke kernels.
//!
//! Each kernel (`tests/boot/x86_64`, `tests/boot/aarch64`) boots, installs its exception
//! handlers and a [`Platform`], builds its page tables with `machvm-page-table`, switches to
//! them, and then runs the checks of [`checks`] on the real MMU. This crate holds what both
//! architectures share:
//!
//! - [`console`]: `kprintln!` over the platform's UART, and the `SMOKE PASS` / `SMOKE FAIL`
//!   verdict ([`report`]);
//! - [`pool`]: a [`FrameAllocator`](machvm_addr::FrameAllocator) over a static frame pool;
//! - [`fault`]: per-CPU fault counters and the demand-paging hook the exception handlers call;
//! - [`aslr`]: `machvm-aslr` seeded from the CPU's random-number instruction;
//! - [`heap`]: `machvm-zone-alloc` as the kernels' global heap, and the zone checks;
//! - [`kmem`]: zones over machvm's `KernelPages` on the kernel's own table: guard pages
//!   and read-only elements enforced by the MMU;
//! - [`space`]: an address space (page table + frame pool + TLB operations) whose every edit
//!   is flushed through `machvm-tlb`'s `TlbFlush` hook;
//! - [`checks`]: the TLB and page-table checks, generic over the translation format and the
//!   TLB operations, so the same code runs on x86_64 4/5-level paging and every aarch64
//!   granule;
//! - [`vm`]: machvm's `VmSystem` on the real MMU — address spaces whose pages come in by
//!   real page faults (zero fill, copy on write, pageout to the compressor and swap), and
//!   the `vm_stat` / `memory_pressure` / `vmmap` / `zprint` / `vm.swapusage` reports;
//! - [`smp_job`]: work handed to the second CPU.
#![no_std]

extern crate alloc;

pub mod aslr;
pub mod checks;
pub mod cmdline;
pub mod console;
pub mod fault;
pub mod heap;
pub mod kmem;
pub mod pool;
pub mod report;
pub mod shootdown;
pub mod smp_job;
pub mod space;
pub mod vm;

pub use console::Platform;
pub use fault::Cpu;
pub use pool::FramePool;
pub use space::AddressSpace;
