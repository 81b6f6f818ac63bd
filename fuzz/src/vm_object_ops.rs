//! VM object operations (shadows, delayed copies, writes, reads, collapse, page-out, drops)
//! checked against a flat model of what every page of every object reads as.
//!
//! The contract the sequence keeps (as an address map does): an object with shadows, and a
//! delayed copy, is never written directly.

use std::collections::HashMap;
use std::sync::Arc;

use arbitrary::Arbitrary;
use machvm_addr::{PageSize, SimPhysMemory, VmProt};
use machvm_vm_object::{
    CopyResult, CopyStrategy, InMemoryPager, ObjectRef, PageMemory, SimPageMemory, VmObject,
};

const PAGE: u64 = 4096;
const PAGES: u64 = 4;

/// One operation; indices pick among the live objects modulo their number.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// A new anonymous object (delayed copies or symmetric; with a pager or not).
    New { delay: bool, pager: bool },
    /// A shadow of an object.
    Shadow(u8),
    /// A copy by the object's strategy.
    Copy(u8),
    /// Write a value over a page.
    Write(u8, u8, u8),
    /// Read a page and compare with the model.
    Read(u8, u8),
    /// Collapse an object's chain.
    Collapse(u8),
    /// Page a page out (objects with a pager).
    PageOut(u8, u8),
    /// Drop a handle.
    Drop(u8),
}

struct Model {
    own: HashMap<u64, u8>,
    backing: Option<usize>,
    frozen_copy: bool,
}

fn lookup(models: &[Model], mut id: usize, page: u64) -> Option<u8> {
    loop {
        if let Some(v) = models[id].own.get(&page) {
            return Some(*v);
        }
        id = models[id].backing?;
    }
}

fn read_page(m: &SimPageMemory, o: &ObjectRef, page: u64) -> u8 {
    let r = VmObject::resolve(o, page * PAGE, VmProt::READ).expect("read fault");
    let mut buf = vec![0u8; PAGE as usize];
    m.memory().read_bytes(r.frame, &mut buf).expect("frame");
    assert!(buf.iter().all(|b| *b == buf[0]), "torn page");
    buf[0]
}

/// Runs `ops`, panicking on the first disagreement with the model or on a leaked frame.
pub fn run(ops: &[Op]) {
    let phys = SimPhysMemory::builder().size_bytes(4 << 20).build().expect("memory");
    let m = Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB).expect("pages"));
    let dm: Arc<dyn PageMemory> = m.clone();
    let before = m.memory().frames_in_use();
    let mut models: Vec<Model> = Vec::new();
    let mut live: Vec<(ObjectRef, usize)> = Vec::new();
    for op in ops.iter().take(200) {
        let n = live.len();
        let pick = |i: u8| usize::from(i) % n.max(1);
        match *op {
            Op::New { delay, pager } => {
                if models.len() >= 64 {
                    continue;
                }
                let mut b = VmObject::builder(PAGES * PAGE, dm.clone());
                if delay {
                    b = b.strategy(CopyStrategy::Delay);
                }
                let o = b.build().expect("object");
                if pager {
                    o.set_pager(Arc::new(InMemoryPager::new())).expect("pager");
                }
                live.push((o, models.len()));
                models.push(Model { own: HashMap::new(), backing: None, frozen_copy: false });
            }
            _ if n == 0 || models.len() >= 64 => {}
            Op::Shadow(i) => {
                let (o, id) = live[pick(i)].clone();
                let s = VmObject::shadow_of(&o, 0, PAGES * PAGE).expect("shadow");
                live.push((s, models.len()));
                models.push(Model { own: HashMap::new(), backing: Some(id), frozen_copy: false });
            }
            Op::Copy(i) => {
                let (o, id) = live[pick(i)].clone();
                match VmObject::copy(&o, 0, PAGES * PAGE).expect("copy") {
                    CopyResult::Delayed { object, .. } => {
                        let own = (0..PAGES)
                            .map(|p| (p, lookup(&models, id, p).unwrap_or(0)))
                            .collect();
                        live.push((object, models.len()));
                        models.push(Model { own, backing: None, frozen_copy: true });
                    }
                    CopyResult::Symmetric { object, .. } => assert!(Arc::ptr_eq(&object, &o)),
                    other => panic!("unexpected copy {other:?}"),
                }
            }
            Op::Write(i, p, v) => {
                let (o, id) = &live[pick(i)];
                let p = u64::from(p) % PAGES;
                if models[*id].frozen_copy || models.iter().any(|m| m.backing == Some(*id)) {
                    continue;
                }
                let r = VmObject::resolve(o, p * PAGE, VmProt::WRITE).expect("write fault");
                assert!(r.writable && r.depth == 0);
                m.memory().write_bytes(r.frame, &[v; PAGE as usize]).expect("frame");
                models[*id].own.insert(p, v);
            }
            Op::Read(i, p) => {
                let (o, id) = &live[pick(i)];
                let p = u64::from(p) % PAGES;
                let want = lookup(&models, *id, p);
                assert_eq!(read_page(&m, o, p), want.unwrap_or(0), "page {p} of object {id}");
                if want.is_none() {
                    models[*id].own.insert(p, 0);
                }
            }
            Op::Collapse(i) => {
                let _ = VmObject::collapse(&live[pick(i)].0);
            }
            Op::PageOut(i, p) => {
                let _ = live[pick(i)].0.page_out((u64::from(p) % PAGES) * PAGE);
            }
            Op::Drop(i) => {
                live.swap_remove(pick(i));
            }
        }
    }
    drop(live);
    assert_eq!(m.memory().frames_in_use(), before, "frames leaked");
}
