//! The on-disk form of one swapped-out segment: a *record* in a swap slot, sealed with a
//! checksum and (by default) AES-256-XTS.
//!
//! # Layout
//!
//! A record is a whole number of 512-byte sectors. Plaintext, little-endian:
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..4   | magic `MVSW` |
//! | 4..6   | format version (1) |
//! | 6..8   | flags (bit 0: encrypted) |
//! | 8..16  | write sequence number (replay check: must match the swap's in-core entry) |
//! | 16..20 | entry index of the swap's key table |
//! | 20..24 | image length |
//! | 24..48 | the pool's [`SwapHeader`] |
//! | 48..56 | integrity checksum: XXH64 of the whole record with this field zeroed, seeded with the slot's location and the sequence number |
//! | 56..64 | zero |
//! | 64..   | the segment image, then zeros up to the sector boundary |
//!
//! Encryption covers the whole record, checksum included (the checksum is *inside* the
//! encrypted data: flipping any ciphertext bit scrambles a whole 16-byte block of plaintext, so
//! tampering fails the check with probability 1 − 2⁻⁶⁴). Each 512-byte sector is one XTS data
//! unit whose tweak is its global sector number, `file << 64 | slot × sectors_per_slot + i`:
//! the same data written to another slot encrypts differently, and a record copied into
//! another slot decrypts to garbage. A stale record replayed into its own slot fails the
//! sequence-number check.

use aes::Aes256;
use aes::cipher::KeyInit;
use machvm_compressor::pool::{SwapHeader, xxh64};
use xts_mode::{Xts128, get_tweak_default};

use crate::PagingError;
use crate::key::{KEY_MATERIAL_BYTES, KeySource, wipe};

/// Bytes of an XTS data unit (and the granule records are padded to).
pub const SECTOR_BYTES: usize = 512;
/// Bytes of a record's prefix before the image.
pub const RECORD_PREFIX_BYTES: usize = 64;

const MAGIC: [u8; 4] = *b"MVSW";
const FORMAT: u16 = 1;
const FLAG_ENCRYPTED: u16 = 1;
const SUM_AT: usize = 48;

/// Bytes of the record that holds an image of `image_len` bytes (prefix plus image, rounded up
/// to whole sectors).
pub(crate) const fn record_len(image_len: usize) -> usize {
    (RECORD_PREFIX_BYTES + image_len).div_ceil(SECTOR_BYTES) * SECTOR_BYTES
}

/// AES-256-XTS over swap records.
pub(crate) struct Cipher {
    xts: Xts128<Aes256>,
}

impl Cipher {
    /// A cipher keyed from `keys` (64 bytes: data key, then tweak key). The material is wiped
    /// from the stack once the key schedules exist.
    pub(crate) fn from_source(keys: &mut dyn KeySource) -> Result<Self, PagingError> {
        let mut material = [0u8; KEY_MATERIAL_BYTES];
        let result = keys.fill_key(&mut material).and_then(|()| {
            let (k1, k2) = material.split_at(KEY_MATERIAL_BYTES / 2);
            if k1 == k2 {
                return Err(PagingError::WeakKey);
            }
            let c1 = Aes256::new_from_slice(k1).map_err(|_| PagingError::WeakKey)?;
            let c2 = Aes256::new_from_slice(k2).map_err(|_| PagingError::WeakKey)?;
            Ok(Self {
                xts: Xts128::new(c1, c2),
            })
        });
        wipe(&mut material);
        result
    }

    fn encrypt(&self, record: &mut [u8], first_sector: u128) {
        self.xts
            .encrypt_area(record, SECTOR_BYTES, first_sector, get_tweak_default);
    }

    fn decrypt(&self, record: &mut [u8], first_sector: u128) {
        self.xts
            .decrypt_area(record, SECTOR_BYTES, first_sector, get_tweak_default);
    }
}

impl core::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Cipher(aes-256-xts)")
    }
}

/// Where a record lives: the tweak and checksum seed derive from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Place {
    /// Swap file index.
    pub(crate) file: u32,
    /// Slot in the file.
    pub(crate) slot: u32,
    /// Sectors per slot (slot bytes ÷ 512).
    pub(crate) sectors_per_slot: u64,
}

impl Place {
    fn first_sector(self) -> u128 {
        (u128::from(self.file) << 64) | u128::from(u64::from(self.slot) * self.sectors_per_slot)
    }

    fn seed(self, seq: u64) -> u64 {
        ((u64::from(self.file) << 32) | u64::from(self.slot)) ^ seq
    }
}

/// What a record says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Write sequence number.
    pub(crate) seq: u64,
    /// Entry index in the swap's key table.
    pub(crate) entry: u32,
    /// The pool's header.
    pub(crate) header: SwapHeader,
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(d) = b.get_mut(at..at + 2) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    if let Some(d) = b.get_mut(at..at + 4) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    if let Some(d) = b.get_mut(at..at + 8) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn get32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn get64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn checksum(record: &mut [u8], seed: u64) -> u64 {
    put64(record, SUM_AT, 0);
    xxh64(record, seed)
}

/// Seals `record` in place: its image must already sit at `RECORD_PREFIX_BYTES..` with zeros
/// after it; writes the prefix and checksum, then encrypts when `cipher` is given. `record` is
/// `record_len(image_len)` bytes.
pub(crate) fn seal(record: &mut [u8], meta: &Meta, place: Place, cipher: Option<&Cipher>) {
    let Some(prefix) = record.get_mut(..RECORD_PREFIX_BYTES) else {
        return;
    };
    prefix.fill(0);
    prefix[..4].copy_from_slice(&MAGIC);
    put16(prefix, 4, FORMAT);
    put16(prefix, 6, if cipher.is_some() { FLAG_ENCRYPTED } else { 0 });
    put64(prefix, 8, meta.seq);
    put32(prefix, 16, meta.entry);
    put32(prefix, 20, meta.header.image_len);
    put16(prefix, 24, meta.header.version);
    put16(prefix, 26, meta.header.slots);
    put32(prefix, 28, meta.header.segment);
    put32(prefix, 32, meta.header.image_len);
    put32(prefix, 36, meta.header.data_len);
    put64(prefix, 40, meta.header.checksum);
    let sum = checksum(record, place.seed(meta.seq));
    put64(record, SUM_AT, sum);
    if let Some(cipher) = cipher {
        cipher.encrypt(record, place.first_sector());
    }
}

/// Opens a record read from `place` in place (decrypting it when `cipher` is given) and checks
/// it: magic, format, encryption flag, checksum, and that the image fits. Returns what it says
/// about itself; the image is at `RECORD_PREFIX_BYTES..RECORD_PREFIX_BYTES + image_len`.
///
/// `None` when any check fails: the record is damaged, tampered with, or not a record.
pub(crate) fn open(
    record: &mut [u8],
    expected_seq: u64,
    place: Place,
    cipher: Option<&Cipher>,
) -> Option<Meta> {
    if record.len() < RECORD_PREFIX_BYTES || record.len() % SECTOR_BYTES != 0 {
        return None;
    }
    if let Some(cipher) = cipher {
        cipher.decrypt(record, place.first_sector());
    }
    let stored = get64(record, SUM_AT)?;
    if record.get(..4)? != MAGIC || get16(record, 4)? != FORMAT {
        return None;
    }
    let flags = get16(record, 6)?;
    if (flags & FLAG_ENCRYPTED != 0) != cipher.is_some() {
        return None;
    }
    let seq = get64(record, 8)?;
    if seq != expected_seq || checksum(record, place.seed(seq)) != stored {
        return None;
    }
    put64(record, SUM_AT, stored);
    let image_len = get32(record, 20)?;
    let header = SwapHeader {
        version: get16(record, 24)?,
        slots: get16(record, 26)?,
        segment: get32(record, 28)?,
        image_len: get32(record, 32)?,
        data_len: get32(record, 36)?,
        checksum: get64(record, 40)?,
    };
    if header.image_len != image_len || record_len(image_len as usize) != record.len() {
        return None;
    }
    Some(Meta {
        seq,
        entry: get32(record, 16)?,
        header,
    })
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;
    use crate::FixedKey;

    fn key() -> FixedKey {
        let mut k = [0u8; 64];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        FixedKey::new(k)
    }

    fn meta(image_len: u32) -> Meta {
        Meta {
            seq: 42,
            entry: 3,
            header: SwapHeader {
                version: SwapHeader::VERSION,
                segment: 5,
                image_len,
                data_len: image_len - 16,
                slots: 1,
                checksum: 0x1234,
            },
        }
    }

    const PLACE: Place = Place {
        file: 1,
        slot: 2,
        sectors_per_slot: 4,
    };

    fn sealed(image: &[u8], place: Place, cipher: Option<&Cipher>) -> alloc::vec::Vec<u8> {
        let mut rec = vec![0u8; record_len(image.len())];
        rec[RECORD_PREFIX_BYTES..RECORD_PREFIX_BYTES + image.len()].copy_from_slice(image);
        seal(&mut rec, &meta(image.len() as u32), place, cipher);
        rec
    }

    #[test]
    fn records_round_up_to_sectors() {
        assert_eq!(record_len(0), 512);
        assert_eq!(record_len(448), 512);
        assert_eq!(record_len(449), 1024);
        assert_eq!(record_len(65536), 65536 + 512);
    }

    #[test]
    fn sealed_records_open_with_their_metadata() {
        let image: alloc::vec::Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let cipher = Cipher::from_source(&mut key()).unwrap();
        for c in [None, Some(&cipher)] {
            let mut rec = sealed(&image, PLACE, c);
            let m = open(&mut rec, 42, PLACE, c).unwrap();
            assert_eq!(m, meta(1000));
            assert_eq!(&rec[64..1064], &image[..]);
        }
    }

    #[test]
    fn encryption_hides_the_image_and_depends_on_the_slot() {
        let image = vec![0x5a_u8; 2000];
        let cipher = Cipher::from_source(&mut key()).unwrap();
        let a = sealed(&image, PLACE, Some(&cipher));
        let other = Place { slot: 3, ..PLACE };
        let b = sealed(&image, other, Some(&cipher));
        assert!(!a.windows(16).any(|w| w == [0x5a; 16]), "plaintext visible");
        assert_ne!(a, b, "tweak per slot");
        // A record moved to another slot does not open there.
        let mut moved = a.clone();
        assert!(open(&mut moved, 42, other, Some(&cipher)).is_none());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let image = vec![7u8; 600];
        let cipher = Cipher::from_source(&mut key()).unwrap();
        for c in [None, Some(&cipher)] {
            let rec = sealed(&image, PLACE, c);
            for at in (0..rec.len()).step_by(37) {
                let mut bad = rec.clone();
                bad[at] ^= 0x10;
                assert!(
                    open(&mut bad, 42, PLACE, c).is_none(),
                    "byte {at} not detected"
                );
            }
        }
    }

    #[test]
    fn replays_and_mode_mismatches_are_refused() {
        let image = vec![1u8; 100];
        let cipher = Cipher::from_source(&mut key()).unwrap();
        let mut rec = sealed(&image, PLACE, Some(&cipher));
        assert!(open(&mut rec.clone(), 41, PLACE, Some(&cipher)).is_none());
        let mut plain = sealed(&image, PLACE, None);
        assert!(open(&mut plain, 42, PLACE, Some(&cipher)).is_none());
        assert!(open(&mut rec, 42, PLACE, None).is_none());
        assert!(open(&mut [0u8; 100], 42, PLACE, None).is_none());
    }

    #[test]
    fn equal_key_halves_are_refused() {
        let err = Cipher::from_source(&mut FixedKey::new([0; 64])).unwrap_err();
        assert_eq!(err, PagingError::WeakKey);
    }
}
