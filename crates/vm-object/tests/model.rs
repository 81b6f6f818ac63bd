//! Random sequences of object operations against a flat reference model of what every page
//! of every object must read as.
// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{PAGE, dyn_memory, frames, memory, read, write};
use machvm_vm_object::{CopyResult, CopyStrategy, InMemoryPager, ObjectRef, VmObject};
use proptest::prelude::*;

const PAGES: u64 = 6;

#[derive(Clone, Debug)]
enum Op {
    New { delay: bool, pager: bool },
    Shadow(usize),
    Copy(usize),
    Write(usize, u64, u8),
    Read(usize, u64),
    Collapse(usize),
    PageOut(usize, u64),
    Drop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (any::<bool>(), any::<bool>()).prop_map(|(delay, pager)| Op::New { delay, pager }),
        2 => any::<usize>().prop_map(Op::Shadow),
        1 => any::<usize>().prop_map(Op::Copy),
        6 => (any::<usize>(), 0..PAGES, 1..=255u8).prop_map(|(i, p, v)| Op::Write(i, p, v)),
        6 => (any::<usize>(), 0..PAGES).prop_map(|(i, p)| Op::Read(i, p)),
        2 => any::<usize>().prop_map(Op::Collapse),
        2 => (any::<usize>(), 0..PAGES).prop_map(|(i, p)| Op::PageOut(i, p)),
        1 => any::<usize>().prop_map(Op::Drop),
    ]
}

/// The model of one object: its own pages and the object it shows through.
struct Model {
    own: HashMap<u64, u8>,
    backing: Option<usize>,
    /// A delayed copy: frozen like a backing object (a map writes it through a shadow).
    copy: bool,
}

/// What `page` of object `id` reads as, and whether any object on its chain has the page
/// (a read of a page no object has zero-fills it in the object read, which from then on no
/// longer shows later writes to its backing objects).
fn lookup(models: &[Model], mut id: usize, page: u64) -> Option<u8> {
    loop {
        if let Some(v) = models[id].own.get(&page) {
            return Some(*v);
        }
        id = models[id].backing?;
    }
}

fn content(models: &[Model], id: usize, page: u64) -> u8 {
    lookup(models, id, page).unwrap_or(0)
}

fn run(ops: Vec<Op>) {
    let m = memory();
    let before = frames(&m);
    let mut models: Vec<Model> = Vec::new();
    // Live handles: (object, model index).
    let mut live: Vec<(ObjectRef, usize)> = Vec::new();
    let new_object = |delay: bool, pager: bool| {
        let mut b = VmObject::builder(PAGES * PAGE, dyn_memory(&m));
        if delay {
            b = b.strategy(CopyStrategy::Delay);
        }
        let o = b.build().unwrap();
        if pager {
            o.set_pager(Arc::new(InMemoryPager::new())).unwrap();
        }
        o
    };
    for op in ops {
        if live.is_empty() && !matches!(op, Op::New { .. }) {
            continue;
        }
        let pick = |i: usize| i % live.len().max(1);
        match op {
            Op::New { delay, pager } => {
                live.push((new_object(delay, pager), models.len()));
                models.push(Model {
                    own: HashMap::new(),
                    backing: None,
                    copy: false,
                });
            }
            Op::Shadow(i) => {
                let (o, id) = live[pick(i)].clone();
                let s = VmObject::shadow_of(&o, 0, PAGES * PAGE).unwrap();
                live.push((s, models.len()));
                models.push(Model {
                    own: HashMap::new(),
                    backing: Some(id),
                    copy: false,
                });
            }
            Op::Copy(i) => {
                let (o, id) = live[pick(i)].clone();
                match VmObject::copy(&o, 0, PAGES * PAGE).unwrap() {
                    CopyResult::Delayed { object, offset } => {
                        assert_eq!(offset, 0);
                        let snapshot = (0..PAGES).map(|p| (p, content(&models, id, p))).collect();
                        live.push((object, models.len()));
                        models.push(Model {
                            own: snapshot,
                            backing: None,
                            copy: true,
                        });
                    }
                    CopyResult::Symmetric { object, .. } => assert!(Arc::ptr_eq(&object, &o)),
                    other => panic!("unexpected copy {other:?}"),
                }
            }
            Op::Write(i, p, v) => {
                let (o, id) = &live[pick(i)];
                // The contract: an object with shadows is frozen for them (the map writes
                // through a new shadow instead; only delayed-copy sources are written, and
                // they push the old pages to their copies).
                if models[*id].copy || models.iter().any(|m| m.backing == Some(*id)) {
                    continue;
                }
                write(&m, o, p * PAGE, v);
                models[*id].own.insert(p, v);
            }
            Op::Read(i, p) => {
                let (o, id) = &live[pick(i)];
                assert_eq!(
                    read(&m, o, p * PAGE),
                    content(&models, *id, p),
                    "page {p} of model object {id}"
                );
                if lookup(&models, *id, p).is_none() {
                    models[*id].own.insert(p, 0);
                }
            }
            Op::Collapse(i) => {
                let (o, _) = &live[pick(i)];
                let _ = VmObject::collapse(o);
            }
            Op::PageOut(i, p) => {
                let (o, _) = &live[pick(i)];
                let _ = o.page_out(p * PAGE);
            }
            Op::Drop(i) => {
                live.swap_remove(pick(i));
            }
        }
    }
    // Everything still reads right, then every frame comes back.
    for (o, id) in &live {
        for p in 0..PAGES {
            assert_eq!(read(&m, o, p * PAGE), content(&models, *id, p));
            if lookup(&models, *id, p).is_none() {
                models[*id].own.insert(p, 0);
            }
        }
    }
    drop(live);
    assert_eq!(frames(&m), before, "frames leaked");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 200 }))]

    #[test]
    fn objects_read_what_the_model_says(
        ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 24 } else { 80 })
    ) {
        run(ops);
    }
}
