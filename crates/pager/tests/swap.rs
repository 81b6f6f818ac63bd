//! The swap on its own, as the compressor's segment store: files on demand, growth, limits,
//! lazy reclaim, encryption, integrity, `vm.swapusage`, and real files in a directory.
// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::sync::Arc;

use common::{codec, key, noise, pool, temp_dir};
use machvm_compressor::pool::{SegmentSize, SegmentStore, StoreError, SwapHeader, SwapKey};
use machvm_pager::{
    DefaultPager, Faults, FixedKey, FsSwapBacking, MemorySwapBacking, PagingError, Swap,
    SwapBacking, SwapConfig,
};

const SLOT: u64 = 65536 + 512;

fn header(segment: u32, len: usize) -> SwapHeader {
    SwapHeader {
        version: SwapHeader::VERSION,
        segment,
        image_len: len as u32,
        data_len: len as u32,
        slots: 0,
        checksum: u64::from(segment),
    }
}

fn image(seed: u64) -> Vec<u8> {
    noise(seed, 3000 + (seed as usize % 7) * 500)
}

fn config(min: u32, max: u32, files: u32) -> SwapConfig {
    SwapConfig::new(SegmentSize::K64)
        .file_slots(min, max)
        .max_files(files)
        .reclaim_slack_slots(1)
}

fn swap(min: u32, max: u32, files: u32) -> Swap<MemorySwapBacking> {
    Swap::new(
        MemorySwapBacking::new(),
        config(min, max, files),
        &mut key(),
    )
    .unwrap()
}

fn read_back<B: SwapBacking>(swap: &Swap<B>, key: SwapKey, seed: u64) {
    let want = image(seed);
    let mut out = vec![0u8; want.len()];
    assert_eq!(
        swap.read(key, &mut out).unwrap(),
        header(seed as u32, want.len())
    );
    assert_eq!(out, want);
}

#[test]
fn files_appear_on_demand_grow_then_multiply_up_to_the_limit() {
    let swap = swap(2, 4, 2);
    assert!(swap.file_indices().is_empty());
    assert_eq!(swap.usage().total_bytes, 0);
    let mut keys = Vec::new();
    for seed in 0..8 {
        let img = image(seed);
        keys.push(swap.write(&header(seed as u32, img.len()), &img).unwrap());
        let files = swap.file_indices();
        let expect: &[u32] = match seed {
            0..=3 => &[0],
            _ => &[0, 1],
        };
        assert_eq!(files, expect, "after write {seed}");
    }
    let st = swap.stats();
    assert_eq!((st.files_created, st.files_grown, st.records), (2, 2, 8));
    assert_eq!(swap.backing().file_len(0), Some(4 * SLOT));
    assert_eq!(swap.backing().file_len(1), Some(4 * SLOT));
    let usage = swap.usage();
    assert_eq!(
        (usage.total_bytes, usage.used_bytes, usage.free_bytes),
        (8 * SLOT, 8 * SLOT, 0)
    );
    // At the limit: refused, nothing changes.
    let img = image(99);
    assert_eq!(
        swap.write(&header(99, img.len()), &img),
        Err(StoreError::NoSpace)
    );
    assert_eq!(swap.stats().records, 8);
    for (seed, k) in keys.iter().enumerate() {
        read_back(&swap, *k, seed as u64);
    }
}

#[test]
fn reclaim_drains_the_emptiest_file_and_deletes_it() {
    let swap = swap(4, 4, 4);
    let mut keys = Vec::new();
    for seed in 0..12 {
        let img = image(seed);
        keys.push(swap.write(&header(seed as u32, img.len()), &img).unwrap());
    }
    assert_eq!(swap.file_indices(), [0, 1, 2]);
    // Nothing to reclaim while the files are full.
    assert_eq!(swap.reclaim().files_deleted, 0);
    // Free all but one record of file 0 and two of file 1.
    for k in [keys[0], keys[1], keys[2], keys[4], keys[5]] {
        swap.free(k);
    }
    let report = swap.reclaim();
    assert_eq!(report.files_deleted, 1, "{report:?}");
    assert_eq!(report.records_moved, 1, "file 0 held one record");
    assert_eq!(swap.file_indices(), [1, 2]);
    assert_eq!(swap.stats().records, 7);
    let live: Vec<u64> = vec![3, 6, 7, 8, 9, 10, 11];
    for seed in &live {
        read_back(&swap, keys[*seed as usize], *seed);
    }
    // Two free slots left in file 1, none elsewhere: no further drain (slack 1 + 4 used in 2).
    assert_eq!(swap.reclaim().files_deleted, 0);
    // Free everything: every file goes.
    for seed in live {
        swap.free(keys[seed as usize]);
    }
    assert_eq!(swap.reclaim().files_deleted, 2);
    assert!(swap.backing().files().is_empty());
    assert_eq!(swap.usage().total_bytes, 0);
    // Swap comes back on demand, as swapfile0 again.
    let img = image(1);
    let k = swap.write(&header(1, img.len()), &img).unwrap();
    assert_eq!(swap.file_indices(), [0]);
    read_back(&swap, k, 1);
}

#[test]
fn reclaim_keeps_a_file_whose_record_cannot_be_read() {
    let swap = swap(4, 4, 4);
    let mut keys = Vec::new();
    for seed in 0..5 {
        let img = image(seed);
        keys.push(swap.write(&header(seed as u32, img.len()), &img).unwrap());
    }
    assert_eq!(swap.file_indices(), [0, 1]);
    swap.free(keys[0]);
    swap.free(keys[1]);
    // File 1 (one record) is the one to drain, but its record is damaged.
    let rec = swap
        .records()
        .into_iter()
        .find(|r| r.key == keys[4])
        .unwrap();
    assert_eq!(rec.file, 1);
    let at = rec.offset_bytes as usize + 100;
    swap.backing().with_file_mut(1, |b| b[at] ^= 1).unwrap();
    let report = swap.reclaim();
    assert_eq!((report.unreadable_records, report.files_deleted), (1, 0));
    assert_eq!(
        swap.file_indices(),
        [0, 1],
        "the damaged record keeps its file"
    );
    // Repaired (a transient bad read), the file drains.
    swap.backing().with_file_mut(1, |b| b[at] ^= 1).unwrap();
    let report = swap.reclaim();
    assert_eq!((report.records_moved, report.files_deleted), (1, 1));
    assert_eq!(swap.file_indices(), [0]);
    for seed in 2..5 {
        read_back(&swap, keys[seed as usize], seed);
    }
}

#[test]
fn keys_lengths_and_frees_are_checked() {
    let swap = swap(2, 4, 2);
    let img = image(3);
    let k = swap.write(&header(3, img.len()), &img).unwrap();
    let mut short = vec![0u8; 10];
    assert_eq!(
        swap.read(k, &mut short),
        Err(StoreError::LengthMismatch {
            stored: img.len(),
            asked: 10
        })
    );
    assert_eq!(swap.read(SwapKey(0), &mut short), Err(StoreError::NotFound));
    assert_eq!(
        swap.read(SwapKey(77), &mut short),
        Err(StoreError::NotFound)
    );
    swap.free(k);
    swap.free(k); // a second free is ignored
    let mut out = vec![0u8; img.len()];
    assert_eq!(swap.read(k, &mut out), Err(StoreError::NotFound));
    // The entry is reused with a new generation: the stale key still misses.
    let k2 = swap.write(&header(4, img.len()), &img).unwrap();
    assert_ne!(k, k2);
    assert_eq!(swap.read(k, &mut out), Err(StoreError::NotFound));
    assert_eq!(swap.stats().frees, 1);
    // An image larger than a slot does not fit.
    let huge = vec![0u8; SLOT as usize - 63];
    assert_eq!(
        swap.write(&header(5, huge.len()), &huge),
        Err(StoreError::NoSpace)
    );
}

#[test]
fn tampering_is_detected_and_a_repaired_record_reads_again() {
    let swap = swap(2, 4, 2);
    let img = image(5);
    let k = swap.write(&header(5, img.len()), &img).unwrap();
    let rec = swap.records()[0];
    assert_eq!(rec.key, k);
    let at = (rec.offset_bytes + rec.len_bytes / 2) as usize;
    swap.backing()
        .with_file_mut(rec.file, |b| b[at] ^= 0x80)
        .unwrap();
    let mut out = vec![0u8; img.len()];
    assert_eq!(swap.read(k, &mut out), Err(StoreError::Io));
    assert_eq!(swap.stats().integrity_failures, 1);
    swap.backing()
        .with_file_mut(rec.file, |b| b[at] ^= 0x80)
        .unwrap();
    read_back(&swap, k, 5);
}

#[test]
fn a_replayed_old_record_is_refused() {
    let swap = swap(1, 1, 1);
    let img = image(6);
    let k = swap.write(&header(6, img.len()), &img).unwrap();
    let rec = swap.records()[0];
    let range = rec.offset_bytes as usize..(rec.offset_bytes + rec.len_bytes) as usize;
    let old = swap
        .backing()
        .with_file_mut(0, |b| b[range.clone()].to_vec())
        .unwrap();
    swap.free(k);
    let k2 = swap.write(&header(6, img.len()), &img).unwrap();
    assert_eq!(swap.records()[0].slot, rec.slot, "same slot reused");
    swap.backing()
        .with_file_mut(0, |b| b[range.clone()].copy_from_slice(&old))
        .unwrap();
    let mut out = vec![0u8; img.len()];
    assert_eq!(swap.read(k2, &mut out), Err(StoreError::Io));
}

#[test]
fn encrypted_records_hide_their_data_plain_ones_do_not() {
    let img = vec![0x3c_u8; 4000];
    let marker = [0x3c_u8; 64];
    let enc = swap(1, 1, 1);
    enc.write(&header(1, img.len()), &img).unwrap();
    let visible = |s: &Swap<MemorySwapBacking>| {
        s.backing()
            .with_file_mut(0, |b| b.windows(64).any(|w| w == marker))
            .unwrap()
    };
    assert!(!visible(&enc));
    assert!(enc.usage().encrypted);
    let plain = Swap::new_unencrypted(MemorySwapBacking::new(), config(1, 1, 1)).unwrap();
    let k = plain.write(&header(1, img.len()), &img).unwrap();
    assert!(visible(&plain));
    assert!(!plain.is_encrypted());
    let mut out = vec![0u8; img.len()];
    plain.read(k, &mut out).unwrap();
    assert_eq!(out, img);
    // Two swaps with different keys write different ciphertext for the same data.
    let mut other_key = FixedKey::new(core::array::from_fn(|i| (i as u8) ^ 0x5a));
    let other = Swap::new(MemorySwapBacking::new(), config(1, 1, 1), &mut other_key).unwrap();
    other.write(&header(1, img.len()), &img).unwrap();
    let a = enc
        .backing()
        .with_file_mut(0, |b| b[..1024].to_vec())
        .unwrap();
    let b = other
        .backing()
        .with_file_mut(0, |b| b[..1024].to_vec())
        .unwrap();
    assert_ne!(a, b);
}

#[test]
fn bad_configurations_and_keys_are_refused() {
    assert_eq!(
        Swap::new(MemorySwapBacking::new(), config(0, 4, 2), &mut key()).unwrap_err(),
        PagingError::BadConfig {
            what: "file_min_slots/file_max_slots"
        }
    );
    assert_eq!(
        Swap::new(
            MemorySwapBacking::new(),
            config(2, 4, 2),
            &mut FixedKey::new([0; 64])
        )
        .unwrap_err(),
        PagingError::WeakKey
    );
    // The default pager needs slots that hold its segments and a second in-core segment.
    let small = Arc::new(Swap::new(MemorySwapBacking::new(), config(2, 4, 2), &mut key()).unwrap());
    let big_segments = machvm_compressor::pool::PoolConfig::new(SegmentSize::K256);
    assert!(matches!(
        DefaultPager::new(big_segments, codec(), Some(small.clone())),
        Err(PagingError::BadConfig { .. })
    ));
    assert!(matches!(
        DefaultPager::new(pool(1), codec(), Some(small)),
        Err(PagingError::BadConfig { .. })
    ));
}

#[test]
fn device_errors_are_reported_and_change_nothing() {
    // A 3-slot device: the fourth record does not fit.
    let swap = Swap::new(
        MemorySwapBacking::with_capacity(3 * SLOT),
        config(1, 4, 4),
        &mut key(),
    )
    .unwrap();
    let mut keys = Vec::new();
    for seed in 0..3 {
        let img = image(seed);
        keys.push(swap.write(&header(seed as u32, img.len()), &img).unwrap());
    }
    let img = image(3);
    assert_eq!(
        swap.write(&header(3, img.len()), &img),
        Err(StoreError::NoSpace)
    );
    swap.backing().set_faults(Faults {
        writes: true,
        ..Faults::default()
    });
    swap.free(keys[2]);
    assert_eq!(swap.write(&header(3, img.len()), &img), Err(StoreError::Io));
    assert_eq!(swap.stats().records, 2);
    swap.backing().set_faults(Faults {
        reads: true,
        ..Faults::default()
    });
    let mut out = vec![0u8; image(0).len()];
    assert_eq!(swap.read(keys[0], &mut out), Err(StoreError::Io));
    swap.backing().set_faults(Faults::default());
    read_back(&swap, keys[0], 0);
    read_back(&swap, keys[1], 1);
    assert!(swap.stats().io_errors >= 2);
}

#[test]
fn swapusage_prints_like_macos() {
    let swap = swap(2, 4, 2);
    let img = image(1);
    swap.write(&header(1, img.len()), &img).unwrap();
    let text = swap.usage().to_string();
    assert_eq!(
        text,
        "vm.swapusage: total = 0.13M  used = 0.06M  free = 0.06M  (encrypted)"
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn swap_files_live_in_a_directory() {
    let dir = temp_dir("fs-swap");
    {
        let backing = FsSwapBacking::new(&dir).unwrap();
        let swap = Swap::new(backing, config(2, 2, 3), &mut key()).unwrap();
        let mut keys = Vec::new();
        for seed in 0..5 {
            let img = image(seed);
            keys.push(swap.write(&header(seed as u32, img.len()), &img).unwrap());
        }
        for i in 0..3 {
            let p = dir.join(format!("swapfile{i}"));
            assert_eq!(
                std::fs::metadata(&p).unwrap().len(),
                2 * SLOT,
                "{}",
                p.display()
            );
        }
        for (seed, k) in keys.iter().enumerate() {
            read_back(&swap, *k, seed as u64);
        }
        // A bad byte on disk is an error, never data.
        let rec = swap.records()[3];
        let path = dir.join(format!("swapfile{}", rec.file));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(rec.offset_bytes + 5) as usize] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let mut out = vec![0u8; image(3).len()];
        assert_eq!(swap.read(rec.key, &mut out), Err(StoreError::Io));
        for k in &keys {
            swap.free(*k);
        }
        assert_eq!(swap.reclaim().files_deleted, 3);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "files deleted");
        let img = image(1);
        swap.write(&header(1, img.len()), &img).unwrap();
        assert!(dir.join("swapfile0").is_file());
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "dropped backing cleans up"
    );
    std::fs::remove_dir(&dir).unwrap();
}
