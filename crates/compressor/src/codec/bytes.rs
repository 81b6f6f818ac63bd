//! Byte views of word pages, for the byte-oriented codecs (LZ4, raw copies).
//!
//! A page is `[u32]`; its bytes in memory order are the bytes LZ4 and the raw format store
//! (little-endian on every target machvm supports).

/// Returns the bytes of `words` in memory order.
pub fn as_bytes(words: &[u32]) -> &[u8] {
    let len = core::mem::size_of_val(words);
    // SAFETY: the pointer comes from a valid `&[u32]` covering `len` bytes, u8 has alignment
    // 1, every byte of a u32 is initialised (no padding), and the shared borrow of `words`
    // lives as long as the returned slice, so nothing writes the bytes meanwhile.
    unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len) }
}

/// Returns the bytes of `words` in memory order, writable.
pub fn as_bytes_mut(words: &mut [u32]) -> &mut [u8] {
    let len = core::mem::size_of_val(words);
    // SAFETY: as in `as_bytes`, and any byte pattern written through the view is a valid u32;
    // the exclusive borrow of `words` is held by the returned slice, so it is the only access.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn views_cover_every_byte_in_memory_order() {
        let mut w = [0x0403_0201u32, 0x0807_0605];
        assert_eq!(as_bytes(&w), &[1, 2, 3, 4, 5, 6, 7, 8]);
        as_bytes_mut(&mut w)[7] = 0xff;
        assert_eq!(w[1], 0xff07_0605);
    }
}
