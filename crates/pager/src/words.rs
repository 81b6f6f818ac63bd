//! Object pages are bytes, compressor pages are 32-bit words: conversions between the two.

use alloc::vec::Vec;

/// Words of a 4 KiB page: such pages are converted on the stack.
const STACK_WORDS: usize = 1024;

/// Runs `f` with a zeroed word buffer of `words` words (on the stack for pages up to 4 KiB,
/// on the heap above); `None` when the heap buffer cannot be allocated.
pub(crate) fn with_words<R>(words: usize, f: impl FnOnce(&mut [u32]) -> R) -> Option<R> {
    if words <= STACK_WORDS {
        let mut buf = [0u32; STACK_WORDS];
        Some(f(buf.get_mut(..words)?))
    } else {
        let mut v = Vec::new();
        v.try_reserve_exact(words).ok()?;
        v.resize(words, 0);
        Some(f(&mut v))
    }
}

/// Fills `words` from little-endian `bytes` (`bytes.len() == 4 × words.len()`).
pub(crate) fn to_words(bytes: &[u8], words: &mut [u32]) {
    for (w, c) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        let mut b = [0u8; 4];
        b.copy_from_slice(c);
        *w = u32::from_le_bytes(b);
    }
}

/// Fills `bytes` with `words`, little-endian.
pub(crate) fn to_bytes(words: &[u32], bytes: &mut [u8]) {
    for (w, c) in words.iter().zip(bytes.chunks_exact_mut(4)) {
        c.copy_from_slice(&w.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_words_round_trip_on_stack_and_heap() {
        for words in [1024, 4096] {
            let bytes: Vec<u8> = (0..words * 4).map(|i| (i * 7 % 256) as u8).collect();
            let back = with_words(words, |w| {
                to_words(&bytes, w);
                let mut out = alloc::vec![0u8; words * 4];
                to_bytes(w, &mut out);
                out
            })
            .unwrap();
            assert_eq!(back, bytes);
        }
    }
}
