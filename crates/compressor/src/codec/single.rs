//! Single-value page detection: a page that is one 32- or 64-bit value repeated.
//!
//! XNU stores such pages (zero pages are the common case) in a small value table instead of a
//! segment. The check is one pass over the page that stops at the first 16-word block holding
//! a word that differs from the pattern, so a page that is not single-valued usually costs a
//! few words.

use super::SingleValue;

/// Returns the repeated value if every even word of `page` equals `page[0]` and every odd word
/// equals `page[1]` (a repeated 64-bit value; a repeated 32-bit value is the case where both
/// are equal). An empty page or one of a single word is not a single-value page.
#[must_use]
pub fn detect(page: &[u32]) -> Option<SingleValue> {
    let (&lo, &hi) = match page {
        [lo, hi, ..] => (lo, hi),
        _ => return None,
    };
    // Blocks of 16 words: the comparison of one block has no branch, so it vectorises.
    let mut blocks = page.chunks_exact(16);
    for block in &mut blocks {
        let mut diff = 0u32;
        for pair in block.chunks_exact(2) {
            if let [a, b] = pair {
                diff |= (a ^ lo) | (b ^ hi);
            }
        }
        if diff != 0 {
            return None;
        }
    }
    let rest = blocks.remainder();
    let mut diff = 0u32;
    for (i, w) in rest.iter().enumerate() {
        // The remainder starts at a multiple of 16 words, so its parity is its index's.
        diff |= w ^ if i % 2 == 0 { lo } else { hi };
    }
    if diff != 0 {
        return None;
    }
    Some(SingleValue {
        value: u64::from(lo) | (u64::from(hi) << 32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_page_is_single_value_zero() {
        assert_eq!(detect(&[0; 1024]), Some(SingleValue { value: 0 }));
    }

    #[test]
    fn repeated_32_bit_value_fills_both_halves() {
        let v = detect(&[0xdead_beef; 1024]).unwrap();
        assert_eq!(v.value, 0xdead_beef_dead_beef);
    }

    #[test]
    fn repeated_64_bit_value_keeps_word_order() {
        let page: [u32; 1024] = core::array::from_fn(|i| if i % 2 == 0 { 1 } else { 2 });
        let v = detect(&page).unwrap();
        assert_eq!(v.value, 1 | (2 << 32));
        let mut back = [0u32; 1024];
        v.fill(&mut back);
        assert_eq!(back, page);
    }

    #[test]
    fn one_different_word_anywhere_is_not_single_value() {
        for i in [0, 1, 2, 15, 16, 17, 511, 1022, 1023] {
            let mut page = [7u32; 1024];
            page[i] = 8;
            assert_eq!(detect(&page), None, "word {i}");
        }
    }

    #[test]
    fn tiny_inputs_are_not_single_value() {
        assert_eq!(detect(&[]), None);
        assert_eq!(detect(&[1]), None);
        assert_eq!(
            detect(&[1, 2, 1]),
            Some(SingleValue {
                value: 1 | (2 << 32)
            })
        );
        assert_eq!(detect(&[1, 2, 3]), None);
    }
}
