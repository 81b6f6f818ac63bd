//! Chunks: the page runs a zone carves into elements, with their in-band header, allocation
//! bitmap and encoded freelist.
//!
//! A chunk is `chunk_size` bytes (a power of two, a multiple of the page size) aligned to its
//! size, so the header of any element is found by masking the element's address. Layout:
//!
//! ```text
//! | ChunkHeader | bitmap: one bit per element (1 = out of the chunk) | pad | elem 0 | elem 1 | …
//! ```
//!
//! Elements leave a chunk from its freelist (elements given back earlier) or, while it has
//! never-used ("fresh") elements, from a bump index, so a new chunk is not threaded up front.
//! Freelist links live in the first word of a free element, encoded as
//! `next ^ secret ^ slot_address` when the zone encodes its freelists, and every decoded link
//! is checked to point at an element boundary of the same chunk before it is followed.
//!
//! Everything here works on raw pointers into memory a `PageSource` handed out; the zone
//! holds its lock around every call.

use core::ptr::{self, NonNull};

use crate::error::ViolationKind;

/// Magic value of a chunk header, mixed with the zone secret and the chunk address.
const CHUNK_MAGIC: usize = 0x5a0e_c4a1_7e5e_11e5_u64 as usize;

/// Which list of its zone a chunk is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ListKind {
    /// Every element is in the chunk.
    Empty = 0,
    /// Some elements are out, some in.
    Partial = 1,
    /// Every element is out.
    Full = 2,
    /// Retired after a corrupt freelist was found: never allocated from again.
    Quarantine = 3,
}

/// The in-band header at the start of every chunk.
#[repr(C)]
pub(crate) struct ChunkHeader {
    /// [`CHUNK_MAGIC`] ^ zone secret ^ chunk address: proves the chunk is the zone's.
    magic: usize,
    /// Encoded address of the first free element (encoded 0: none).
    free_head: usize,
    /// Elements on the freelist.
    free: u32,
    /// Index of the first never-used element.
    fresh: u32,
    /// Elements out of the chunk.
    out: u32,
    /// Free elements on neither the freelist nor fresh: returned from magazines in bulk,
    /// marked only in the loose bitmap (no element is written, so a bulk return touches no
    /// element memory).
    loose: u32,
    /// The list the chunk is on.
    pub(crate) list: ListKind,
    /// Neighbours on that list.
    pub(crate) prev: *mut ChunkHeader,
    pub(crate) next: *mut ChunkHeader,
}

/// Where things are in a chunk of one zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes between element starts (the element size rounded up to the alignment).
    pub(crate) stride: usize,
    /// Chunk size in bytes (power of two, multiple of the page size).
    pub(crate) chunk_size: usize,
    /// Offset of element 0.
    pub(crate) first: usize,
    /// Offset of the per-element state bytes (1: with a user, 0: free), after the bitmaps.
    pub(crate) states: usize,
    /// Bytes of each bitmap (the out bitmap right after the header, then the loose one).
    bitmap: usize,
    /// Elements per chunk.
    pub(crate) per_chunk: usize,
    /// Bytes at the end of the chunk kept free of elements (a guard page, or 0).
    pub(crate) tail: usize,
    /// `!(chunk_size - 1)`: masks an address down to its chunk.
    chunk_mask: usize,
    /// The inverse of the stride's odd factor modulo `2^usize::BITS`, and the number of
    /// factors of two in the stride: together they divide an offset by the stride and test
    /// that it divides, with one multiplication (see [`Geometry::index_of`]).
    odd_inverse: usize,
    stride_twos: u32,
}

/// The inverse of odd `m` modulo `2^usize::BITS` (Newton's iteration: `m * m == 1` modulo 8,
/// and each step doubles the number of correct low bits: 3, 6, 12, 24, 48, 96).
const fn odd_inverse(m: usize) -> usize {
    let mut x = m;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2usize.wrapping_sub(m.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// What a zone asks of its chunks' layout besides the element size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Layout {
    /// Keep the last page free for a guard.
    pub(crate) guard: bool,
    /// Start the elements on a page boundary (so their pages can be protected apart from the
    /// header's).
    pub(crate) page_aligned: bool,
}

/// Smallest chunk a zone uses: 16 KiB keeps the headers of a zone's busy chunks few enough to
/// stay cached when frees come in random order (every checked free reads its chunk's header).
pub(crate) const MIN_CHUNK: usize = 16 << 10;

/// Largest chunk a zone uses.
pub(crate) const MAX_CHUNK: usize = 1 << 20;

impl Geometry {
    /// Picks the chunk size for elements of `stride` bytes aligned to `align`: the smallest
    /// power-of-two number of pages that holds at least 8 elements (or as many as fit in
    /// [`MAX_CHUNK`]) and wastes at most 1/16 of the chunk, else the least wasteful size.
    pub(crate) fn new(stride: usize, align: usize, page: usize, layout: Layout) -> Option<Self> {
        let mut best: Option<(usize, Self)> = None;
        let mut chunk_size = page.max(MIN_CHUNK);
        let tail = if layout.guard { page } else { 0 };
        let first_align = if layout.page_aligned { page } else { align };
        while chunk_size <= MAX_CHUNK.max(page) {
            if let Some(g) = Self::with_chunk(stride, first_align, chunk_size, tail) {
                let waste = chunk_size - g.per_chunk * stride;
                if g.per_chunk >= 8 && waste * 16 <= chunk_size {
                    return Some(g);
                }
                // Per byte of chunk: compare waste / chunk_size without division.
                let better = best.is_none_or(|(w, b)| waste * b.chunk_size < w * chunk_size);
                if g.per_chunk >= 2 && better {
                    best = Some((waste, g));
                }
            }
            chunk_size = chunk_size.checked_mul(2)?;
        }
        best.map(|(_, g)| g)
    }

    /// The geometry with a given chunk size, if at least one element fits.
    fn with_chunk(stride: usize, align: usize, chunk_size: usize, tail: usize) -> Option<Self> {
        let upper = chunk_size / stride;
        let bitmap = upper.div_ceil(64) * 8;
        let states = size_of::<ChunkHeader>() + 2 * bitmap;
        let first = (states + upper.next_multiple_of(8)).next_multiple_of(align);
        let per_chunk = chunk_size.checked_sub(first)?.checked_sub(tail)? / stride;
        (per_chunk > 0 && u32::try_from(per_chunk).is_ok() && stride > 1).then_some(Self {
            stride,
            chunk_size,
            first,
            states,
            bitmap,
            per_chunk,
            tail,
            chunk_mask: !(chunk_size - 1),
            odd_inverse: odd_inverse(stride >> stride.trailing_zeros()),
            stride_twos: stride.trailing_zeros(),
        })
    }

    /// Returns the byte range of the chunk's element pages `[first rounded down to a page,
    /// chunk_size - tail)`, as offsets.
    pub(crate) fn element_pages(&self, page: usize) -> (usize, usize) {
        (self.first - self.first % page, self.chunk_size - self.tail)
    }

    /// Returns the state byte of element `index` of `chunk` (1: with a user, 0: free).
    ///
    /// Each element has its own byte, so CPUs freeing or allocating different elements of a
    /// chunk never touch the same byte; one element moves between CPUs only through the zone
    /// lock or the caller's own synchronisation.
    #[inline(always)]
    pub(crate) fn state(&self, chunk: *mut ChunkHeader, index: usize) -> *mut u8 {
        chunk.cast::<u8>().wrapping_add(self.states + index)
    }

    /// Returns the chunk holding `addr` (by masking).
    #[inline(always)]
    pub(crate) fn chunk_of(&self, addr: *mut u8) -> *mut ChunkHeader {
        addr.map_addr(|a| a & self.chunk_mask).cast()
    }

    /// Returns the index `offset / stride` of the element at byte `offset` from element 0, or
    /// a number at or above `per_chunk` when `offset` is not an element's start in the chunk.
    ///
    /// With `stride = 2^k * m` (`m` odd), multiplying a multiple `q * stride` by `m`'s
    /// inverse leaves `q * 2^k`, which rotated right by `k` is `q`. For any other offset the
    /// result is above `usize::MAX / stride`, and so above `per_chunk` (its elements fit in a
    /// chunk): a non-multiple either keeps some of its low `k` bits, which the rotation sends
    /// to the top, or has a remainder by `m`, which the multiplication spreads over the high
    /// bits. Offsets below element 0 wrap to near `usize::MAX`, which no chunk's element
    /// starts reach either. One multiplication, one rotation and one compare, in place of a
    /// division and a remainder.
    #[inline(always)]
    fn quotient(&self, offset: usize) -> usize {
        offset
            .wrapping_mul(self.odd_inverse)
            .rotate_right(self.stride_twos)
    }

    /// Returns the state byte of `elem`, an element the zone itself handed out or cached (so
    /// no bounds or boundary checks: those ran when the element entered the zone's hands).
    #[inline(always)]
    pub(crate) fn state_of_own(&self, elem: *mut u8) -> *mut u8 {
        let offset = (elem.addr() & !self.chunk_mask).wrapping_sub(self.first);
        self.state(self.chunk_of(elem), self.quotient(offset))
    }

    /// Returns the index of the element starting at `addr` in `chunk`, or `None` if `addr` is
    /// not an element boundary.
    #[inline(always)]
    pub(crate) fn index_of(&self, chunk: *mut ChunkHeader, addr: *mut u8) -> Option<usize> {
        let offset = (addr as usize)
            .wrapping_sub(chunk as usize)
            .wrapping_sub(self.first);
        let index = self.quotient(offset);
        (index < self.per_chunk).then_some(index)
    }
}

/// How a zone protects its free elements: the secret its encodings use, whether freelist links
/// are encoded, whether element states are tracked (checked frees) and whether free elements
/// are zeroed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Codec {
    pub(crate) secret: usize,
    pub(crate) encode: bool,
    pub(crate) mark: bool,
    pub(crate) zero: bool,
    /// Links are signed with pointer authentication (aarch64 with `FEAT_PAuth`) instead of the
    /// XOR encoding.
    pub(crate) pac: bool,
    /// A chunk's magic is `magic_key ^ chunk address`.
    pub(crate) magic_key: usize,
}

impl Codec {
    /// Returns the codec for `secret`, with the per-zone constants precomputed.
    pub(crate) const fn new(secret: usize, encode: bool, mark: bool, zero: bool) -> Self {
        Self {
            secret,
            encode,
            mark,
            zero,
            pac: false,
            magic_key: CHUNK_MAGIC ^ secret,
        }
    }

    /// Seals a freelist link `value` stored at `slot`: signed with pointer authentication,
    /// XOR-encoded, or plain, as the zone is configured.
    #[inline]
    pub(crate) fn seal(&self, value: usize, slot: *mut u8) -> usize {
        #[cfg(target_arch = "aarch64")]
        if self.pac {
            return crate::pac::sign(value, slot as usize ^ self.secret);
        }
        code(value, slot, self.secret, self.encode)
    }

    /// Opens a sealed link read from `slot`; a signed link whose signature does not match
    /// opens to `usize::MAX`, which is no element of any chunk.
    #[inline]
    pub(crate) fn open(&self, stored: usize, slot: *mut u8) -> usize {
        #[cfg(target_arch = "aarch64")]
        if self.pac {
            let value = crate::pac::strip(stored);
            return if crate::pac::sign(value, slot as usize ^ self.secret) == stored {
                value
            } else {
                usize::MAX
            };
        }
        code(stored, slot, self.secret, self.encode)
    }
}

/// Returns the magic a chunk at `chunk` carries (see [`Codec::magic_key`]).
#[inline]
fn magic(chunk: *mut ChunkHeader, magic_key: usize) -> usize {
    magic_key ^ (chunk as usize)
}

/// Encodes (or decodes: the operation is its own inverse) a freelist link stored at `slot`.
#[inline]
fn code(value: usize, slot: *mut u8, secret: usize, encode: bool) -> usize {
    if encode {
        value ^ secret ^ (slot as usize)
    } else {
        value
    }
}

/// Writes a fresh chunk's header and clears its bitmap.
///
/// # Safety
///
/// `chunk` points to `g.chunk_size` writable bytes aligned to `g.chunk_size` that nothing
/// else uses.
pub(crate) unsafe fn init(chunk: *mut ChunkHeader, g: &Geometry, c: &Codec) {
    let header = ChunkHeader {
        magic: magic(chunk, c.magic_key),
        free_head: c.seal(0, chunk.cast()),
        free: 0,
        fresh: 0,
        out: 0,
        loose: 0,
        list: ListKind::Empty,
        prev: ptr::null_mut(),
        next: ptr::null_mut(),
    };
    // SAFETY: the caller gives us the whole chunk; the header and bitmaps fit before
    // `g.first`.
    unsafe {
        chunk.write(header);
        ptr::write_bytes(chunk.add(1).cast::<u8>(), 0, 2 * g.bitmap);
        ptr::write_bytes(chunk.cast::<u8>().add(g.states), 0, g.per_chunk);
    }
}

/// Returns whether `chunk` carries the zone's magic.
///
/// # Safety
///
/// `chunk` is readable for a header's size.
#[inline(always)]
pub(crate) unsafe fn is_zones(chunk: *mut ChunkHeader, magic_key: usize) -> bool {
    // SAFETY: the caller guarantees the header is readable.
    unsafe { (*chunk).magic == magic(chunk, magic_key) }
}

/// Returns `(out, list)` of a chunk.
///
/// # Safety
///
/// `chunk` is an initialised chunk of the zone.
#[inline]
pub(crate) unsafe fn state(chunk: *mut ChunkHeader) -> (usize, ListKind) {
    // SAFETY: the caller guarantees an initialised header.
    unsafe { ((*chunk).out as usize, (*chunk).list) }
}

/// Returns a pointer to the bitmap word of element `index` and its bit.
///
/// # Safety
///
/// `chunk` is an initialised chunk and `index < per_chunk`.
#[inline]
unsafe fn bit(chunk: *mut ChunkHeader, index: usize) -> (*mut u64, u64) {
    // SAFETY: the bitmap follows the header and has a word for every element index.
    let word = unsafe { chunk.add(1).cast::<u64>().add(index / 64) };
    (word, 1 << (index % 64))
}

/// Sets the out-bitmap bits of elements `first..first + count`.
///
/// # Safety
///
/// `chunk` is an initialised chunk and `first + count <= per_chunk`.
#[inline]
unsafe fn set_bits(chunk: *mut ChunkHeader, first: usize, count: usize) {
    let (mut index, end) = (first, first + count);
    while index < end {
        let lo = index % 64;
        let n = (end - index).min(64 - lo);
        let mask = if n == 64 {
            u64::MAX
        } else {
            ((1 << n) - 1) << lo
        };
        // SAFETY: `index < per_chunk`: its bitmap word is inside the chunk.
        unsafe { *bit(chunk, index).0 |= mask };
        index += n;
    }
}

/// Returns a pointer to the loose-bitmap word of element `index` and its bit.
///
/// # Safety
///
/// `chunk` is an initialised chunk of geometry `g` and `index < per_chunk`.
#[inline]
unsafe fn loose_bit(chunk: *mut ChunkHeader, g: &Geometry, index: usize) -> (*mut u64, u64) {
    // SAFETY: the loose bitmap follows the out bitmap and has a word for every index.
    let word = unsafe {
        chunk
            .add(1)
            .cast::<u8>()
            .add(g.bitmap)
            .cast::<u64>()
            .add(index / 64)
    };
    (word, 1 << (index % 64))
}

/// Returns whether element `index` is loose.
///
/// # Safety
///
/// As for [`loose_bit`].
#[inline]
unsafe fn is_loose(chunk: *mut ChunkHeader, g: &Geometry, index: usize) -> bool {
    // SAFETY: the caller's contract.
    unsafe {
        let (word, mask) = loose_bit(chunk, g, index);
        *word & mask != 0
    }
}

/// Takes the first loose element of `chunk` (the caller checked `loose > 0`): clears its loose
/// bit and sets its out bit. With a zeroing codec the whole element must still be zero.
///
/// # Safety
///
/// `chunk` is an initialised chunk of geometry `g` with at least one loose element.
unsafe fn take_loose(
    chunk: *mut ChunkHeader,
    g: &Geometry,
    c: &Codec,
) -> Result<*mut u8, (ViolationKind, *mut u8)> {
    // SAFETY: the caller's contract; indices come from set bits below `per_chunk`.
    unsafe {
        let words = g.per_chunk.div_ceil(64);
        for w in 0..words {
            let (word, _) = loose_bit(chunk, g, w * 64);
            let bits = *word;
            if bits == 0 {
                continue;
            }
            let index = w * 64 + bits.trailing_zeros() as usize;
            if index >= g.per_chunk {
                break;
            }
            let elem = chunk.cast::<u8>().add(g.first + index * g.stride);
            if c.zero {
                let n = g.stride / size_of::<usize>();
                if (0..n).any(|i| elem.cast::<usize>().add(i).read() != 0) {
                    return Err((ViolationKind::ModifiedAfterFree, elem));
                }
            }
            *word = bits & (bits - 1);
            let (out_word, out_mask) = bit(chunk, index);
            *out_word |= out_mask;
            (*chunk).loose -= 1;
            return Ok(elem);
        }
    }
    // The count said there was one: the header was corrupted.
    Err((ViolationKind::FreelistCorrupted, chunk.cast()))
}

/// Takes up to `out.len()` elements out of `chunk` into `out` (returns how many): loose
/// elements first, then the freelist, then fresh ones. When the codec zeroes, every word of a
/// freed element after its link (of a loose one: every word) must still be zero (else it was
/// written after it was freed), and fresh elements are zeroed whole. An element taken off the
/// freelist has its link word cleared (loose and fresh elements carry no link). Element
/// states are not changed.
///
/// # Safety
///
/// `chunk` is an initialised chunk of the zone with geometry `g`.
///
/// # Errors
///
/// A decoded link that is not a free element of this chunk, or a free element written after
/// it was freed: the chunk's freelist is corrupt and no element is taken after it.
pub(crate) unsafe fn take(
    chunk: *mut ChunkHeader,
    g: &Geometry,
    c: &Codec,
    out: &mut [*mut u8],
) -> Result<usize, (ViolationKind, *mut u8)> {
    let mut taken = 0;
    // SAFETY: `chunk` is an initialised chunk of `g` (the caller's guarantee); every element
    // pointer below is derived from `chunk` and stays inside it (indices are checked against
    // `per_chunk` before use).
    // Fields are reached through the raw pointer, never through a `&mut ChunkHeader`: other
    // CPUs read `magic` without the lock (checked frees), which a reference to the whole
    // header would race with.
    unsafe {
        let h = chunk;
        while taken < out.len() {
            if (*h).loose == 0 && (*h).free == 0 {
                // Only fresh elements are left: hand out a run of them at once (a new chunk's
                // usual case), setting their bitmap bits a word at a time and zeroing them in
                // one pass if the zone zeroes.
                let fresh = (*h).fresh as usize;
                let run = (out.len() - taken).min(g.per_chunk.saturating_sub(fresh));
                if run == 0 {
                    break;
                }
                let mut elem = chunk.cast::<u8>().add(g.first + fresh * g.stride);
                if c.zero {
                    // The run's elements are contiguous and inside the chunk.
                    ptr::write_bytes(elem, 0, run * g.stride);
                }
                for slot in &mut out[taken..taken + run] {
                    *slot = elem;
                    elem = elem.wrapping_add(g.stride);
                }
                set_bits(chunk, fresh, run);
                // `run <= per_chunk`, which fits in a u32 (`with_chunk`).
                (*h).fresh += run as u32;
                (*h).out += run as u32;
                taken += run;
                continue;
            }
            let elem = if (*h).loose > 0 {
                take_loose(chunk, g, c)?
            } else {
                // `free > 0`: the run above took every case without loose or free elements.
                let slot_of_head = chunk.cast::<u8>();
                let head = c.open((*h).free_head, slot_of_head);
                let elem = chunk.cast::<u8>().with_addr(head);
                let Some(index) = g.index_of(chunk, elem) else {
                    return Err((ViolationKind::FreelistCorrupted, elem));
                };
                let (word, mask) = bit(chunk, index);
                if *word & mask != 0 || is_loose(chunk, g, index) {
                    // A link to an element that is out (or loose): the freelist was forged.
                    return Err((ViolationKind::FreelistCorrupted, elem));
                }
                if c.zero {
                    // Everything after the link was zeroed when it was freed.
                    let words = g.stride / size_of::<usize>();
                    let mut any = 0;
                    for i in 1..words {
                        any |= elem.cast::<usize>().add(i).read();
                    }
                    if any != 0 {
                        return Err((ViolationKind::ModifiedAfterFree, elem));
                    }
                }
                // The element's own link must lead to another free element of this chunk (or
                // end the list exactly when this is the last free one): a forged link is
                // caught before the element holding it is handed out.
                let next = c.open(elem.cast::<usize>().read(), elem);
                let next_ok = if next == 0 {
                    (*h).free == 1
                } else {
                    (*h).free > 1
                        && g.index_of(chunk, chunk.cast::<u8>().with_addr(next))
                            .is_some_and(|i| {
                                let (w, m) = bit(chunk, i);
                                *w & m == 0 && !is_loose(chunk, g, i) && next != elem as usize
                            })
                };
                if !next_ok {
                    return Err((ViolationKind::FreelistCorrupted, elem));
                }
                elem.cast::<usize>().write(0);
                // Re-encode the next link for the head slot.
                (*h).free_head = c.seal(next, slot_of_head);
                (*h).free -= 1;
                *word |= mask;
                elem
            };
            (*h).out += 1;
            out[taken] = elem;
            taken += 1;
        }
        // An empty freelist must encode "none".
        if (*h).free == 0 {
            (*h).free_head = c.seal(0, chunk.cast());
        }
    }
    Ok(taken)
}

/// Returns `elem` to `chunk`: its first word becomes the encoded link (the caller has already
/// zeroed the rest if the zone zeroes, and set the element's state to free). `user` is the
/// pointer of a caller freeing the element right now and how many bytes it covers: the link's
/// bytes within that reach are written through it (see `Zone::free_sized`).
///
/// # Safety
///
/// `chunk` is an initialised chunk of the zone with geometry `g`, and `elem` is a pointer
/// derived from the chunk.
///
/// # Errors
///
/// [`ViolationKind::NotAnElement`] if `elem` is not an element boundary of the chunk,
/// [`ViolationKind::DoubleFree`] if the element is already in the chunk. Nothing changes.
pub(crate) unsafe fn put(
    chunk: *mut ChunkHeader,
    g: &Geometry,
    c: &Codec,
    elem: *mut u8,
    user: Option<(*mut u8, usize)>,
) -> Result<(), ViolationKind> {
    let index = g.index_of(chunk, elem).ok_or(ViolationKind::NotAnElement)?;
    // SAFETY: `index < per_chunk`, so the bitmap word and the element are inside the chunk.
    unsafe {
        let (word, mask) = bit(chunk, index);
        if *word & mask == 0 {
            return Err(ViolationKind::DoubleFree);
        }
        *word &= !mask;
        let h = chunk;
        let slot_of_head = chunk.cast::<u8>();
        let head = c.open((*h).free_head, slot_of_head);
        write_link(elem, user, c.seal(head, elem));
        (*h).free_head = c.seal(elem as usize, slot_of_head);
        (*h).free += 1;
        (*h).out -= 1;
    }
    Ok(())
}

/// Returns `elem`, an element checked by the zone (a magazine's), to `chunk` as a loose
/// element: only the chunk's bitmaps and counts change, the element is not written.
///
/// # Safety
///
/// `chunk` is an initialised chunk of the zone with geometry `g`, and `elem` is a pointer
/// derived from the chunk.
///
/// # Errors
///
/// [`ViolationKind::NotAnElement`] if `elem` is not an element boundary of the chunk,
/// [`ViolationKind::DoubleFree`] if the element is already in the chunk. Nothing changes.
pub(crate) unsafe fn put_loose(
    chunk: *mut ChunkHeader,
    g: &Geometry,
    elem: *mut u8,
) -> Result<(), ViolationKind> {
    let index = g.index_of(chunk, elem).ok_or(ViolationKind::NotAnElement)?;
    // SAFETY: `index < per_chunk`, so both bitmap words are inside the chunk's header area.
    unsafe {
        let (word, mask) = bit(chunk, index);
        if *word & mask == 0 {
            return Err(ViolationKind::DoubleFree);
        }
        *word &= !mask;
        let (loose, loose_mask) = loose_bit(chunk, g, index);
        *loose |= loose_mask;
        (*chunk).loose += 1;
        (*chunk).out -= 1;
    }
    Ok(())
}

/// Writes a link word at `elem`: through the caller's pointer for the bytes it covers, through
/// the zone's own pointer for the rest.
///
/// # Safety
///
/// `elem` (the zone's pointer) and `user` (the caller's, covering `len` bytes) point to the
/// same element of at least one word.
unsafe fn write_link(elem: *mut u8, user: Option<(*mut u8, usize)>, value: usize) {
    match user {
        // SAFETY: the caller's pointer covers the whole word.
        Some((user, len)) if len >= size_of::<usize>() => unsafe {
            user.cast::<usize>().write(value);
        },
        Some((user, len)) => {
            let bytes = value.to_ne_bytes();
            for (i, b) in bytes.iter().enumerate() {
                let dst = if i < len { user } else { elem };
                // SAFETY: byte `i` of the element's first word, through a pointer that covers it.
                unsafe { dst.add(i).write(*b) };
            }
        }
        // SAFETY: the zone's pointer covers the element.
        None => unsafe { elem.cast::<usize>().write(value) },
    }
}

/// Calls `f` with every element of `chunk` that is out of the chunk (allocated or cached).
///
/// # Safety
///
/// `chunk` is an initialised chunk of geometry `g`, and its bitmap is not changed meanwhile.
pub(crate) unsafe fn for_each_out(
    chunk: *mut ChunkHeader,
    g: &Geometry,
    mut f: impl FnMut(*mut u8),
) {
    for index in 0..g.per_chunk {
        // SAFETY: `index < per_chunk`, so the bitmap word and the element are in the chunk.
        unsafe {
            let (word, mask) = bit(chunk, index);
            if *word & mask != 0 {
                f(chunk.cast::<u8>().add(g.first + index * g.stride));
            }
        }
    }
}

/// An intrusive doubly linked list of chunks.
#[derive(Debug)]
pub(crate) struct ChunkList {
    pub(crate) head: *mut ChunkHeader,
    pub(crate) len: usize,
    kind: ListKind,
}

impl ChunkList {
    pub(crate) const fn new(kind: ListKind) -> Self {
        Self {
            head: ptr::null_mut(),
            len: 0,
            kind,
        }
    }

    /// Pushes `chunk` at the head.
    ///
    /// # Safety
    ///
    /// `chunk` is an initialised chunk on no list.
    pub(crate) unsafe fn push(&mut self, chunk: *mut ChunkHeader) {
        // SAFETY: `chunk` and the current head are initialised chunks of the zone.
        unsafe {
            (*chunk).prev = ptr::null_mut();
            (*chunk).next = self.head;
            (*chunk).list = self.kind;
            if !self.head.is_null() {
                (*self.head).prev = chunk;
            }
        }
        self.head = chunk;
        self.len += 1;
    }

    /// Unlinks `chunk`.
    ///
    /// # Safety
    ///
    /// `chunk` is on this list.
    pub(crate) unsafe fn remove(&mut self, chunk: *mut ChunkHeader) {
        // SAFETY: `chunk` and its neighbours are initialised chunks on this list.
        unsafe {
            let (prev, next) = ((*chunk).prev, (*chunk).next);
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*chunk).prev = ptr::null_mut();
            (*chunk).next = ptr::null_mut();
        }
        self.len -= 1;
    }

    /// Pops the head chunk.
    ///
    /// # Safety
    ///
    /// The list holds initialised chunks only.
    pub(crate) unsafe fn pop(&mut self) -> Option<NonNull<ChunkHeader>> {
        let head = NonNull::new(self.head)?;
        // SAFETY: `head` is on this list.
        unsafe { self.remove(head.as_ptr()) };
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_prefers_small_chunks_with_little_waste() {
        let g = Geometry::new(64, 16, 4096, Layout::default()).unwrap();
        assert_eq!(g.chunk_size, MIN_CHUNK);
        assert!(g.per_chunk >= 8 && g.first >= size_of::<ChunkHeader>());
        assert_eq!(g.first % 16, 0);
        let g = Geometry::new(3072, 8, 4096, Layout::default()).unwrap();
        assert!(g.per_chunk >= 8, "{g:?}");
        assert!((g.chunk_size - g.per_chunk * 3072) * 16 <= g.chunk_size);
        let g = Geometry::new(32768, 16, 4096, Layout::default()).unwrap();
        assert!(g.per_chunk >= 8 && g.chunk_size <= MAX_CHUNK, "{g:?}");
        // Elements larger than the biggest chunk do not fit.
        assert!(Geometry::new(MAX_CHUNK, 16, 4096, Layout::default()).is_none());
        // A guard page at the end, elements from a page boundary.
        let layout = Layout {
            guard: true,
            page_aligned: true,
        };
        let g = Geometry::new(64, 16, 4096, layout).unwrap();
        assert_eq!(g.first % 4096, 0);
        assert!(g.first + g.per_chunk * 64 <= g.chunk_size - 4096);
        assert_eq!(g.element_pages(4096), (g.first, g.chunk_size - 4096));
    }

    #[test]
    fn odd_inverse_inverts() {
        for m in (1..2001)
            .step_by(2)
            .chain([usize::MAX, usize::MAX - 2, 0x9e37_79b9])
        {
            assert_eq!(m.wrapping_mul(odd_inverse(m)), 1, "{m}");
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "every offset of many chunks is slow under miri; no unsafe code"
    )]
    fn index_of_accepts_only_boundaries() {
        let g = Geometry::new(48, 16, 4096, Layout::default()).unwrap();
        let chunk = 0x10_0000 as *mut ChunkHeader;
        let first = (0x10_0000 + g.first) as *mut u8;
        assert_eq!(g.index_of(chunk, first), Some(0));
        assert_eq!(g.index_of(chunk, first.wrapping_add(48)), Some(1));
        assert_eq!(g.index_of(chunk, first.wrapping_add(8)), None);
        assert_eq!(g.index_of(chunk, chunk.cast()), None);
        // The inverse-multiplication division agrees with `/` and `%` on every address of
        // the chunk (the header's included, where offsets from element 0 wrap) and past it,
        // for strides with and without factors of two.
        for (stride, align) in [
            (16, 16),
            (24, 8),
            (40, 8),
            (48, 16),
            (56, 8),
            (64, 16),
            (72, 8),
            (80, 16),
            (136, 8),
            (3072, 8),
            (32768, 16),
        ] {
            let g = Geometry::new(stride, align, 4096, Layout::default()).unwrap();
            for at in 0..g.chunk_size + 64 {
                let addr = (0x10_0000 + at) as *mut u8;
                let want = at.checked_sub(g.first).and_then(|off| {
                    (off % g.stride == 0 && off / g.stride < g.per_chunk).then(|| off / g.stride)
                });
                assert_eq!(g.index_of(chunk, addr), want, "{g:?} address {at}");
                if let Some(index) = want {
                    assert_eq!(g.state_of_own(addr), g.state(chunk, index));
                }
            }
        }
        let past = first.wrapping_add(g.per_chunk * 48);
        assert_eq!(g.index_of(chunk, past), None);
        assert_eq!(g.chunk_of(first.wrapping_add(100)), chunk);
    }
}
