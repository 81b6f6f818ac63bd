//! Pages stored unchanged ([`CodecKind::Raw`]) and the argument checks every codec shares.

use super::bytes::as_bytes;
use super::{CodecKind, CompressError, DecodeError, Encoded, PageSize};

/// Checks a `compress` call's page length and output size.
pub(crate) fn check_compress_args(
    page_size: PageSize,
    page: &[u32],
    out: &[u8],
    needed: usize,
) -> Result<(), CompressError> {
    if page.len() != page_size.words() {
        return Err(CompressError::BadPageLength {
            expected: page_size.words(),
            actual: page.len(),
        });
    }
    if out.len() < needed {
        return Err(CompressError::OutputTooSmall {
            needed,
            actual: out.len(),
        });
    }
    Ok(())
}

/// Checks a `decompress` call's output length.
pub(crate) fn check_out(page_size: PageSize, out: &[u32]) -> Result<(), DecodeError> {
    if out.len() == page_size.words() {
        Ok(())
    } else {
        Err(DecodeError::BadPageLength {
            expected: page_size.words(),
            actual: out.len(),
        })
    }
}

/// Copies the page's bytes to the start of `out` (checked to hold a page).
pub(crate) fn store(page: &[u32], out: &mut [u8]) -> Result<Encoded, CompressError> {
    let bytes = as_bytes(page);
    let Some(dst) = out.get_mut(..bytes.len()) else {
        return Err(CompressError::OutputTooSmall {
            needed: bytes.len(),
            actual: out.len(),
        });
    };
    dst.copy_from_slice(bytes);
    Ok(Encoded::Stored {
        kind: CodecKind::Raw,
        len: bytes.len(),
    })
}

/// Loads a raw page. On error the page is zero-filled.
///
/// # Errors
/// [`DecodeError::BadPageLength`] for an output that is not one page,
/// [`DecodeError::WrongLength`] when `input` is not exactly one page of bytes.
pub(crate) fn load(page_size: PageSize, input: &[u8], out: &mut [u32]) -> Result<(), DecodeError> {
    check_out(page_size, out)?;
    if input.len() != page_size.bytes() {
        out.fill(0);
        return Err(DecodeError::WrongLength);
    }
    for (w, b) in out.iter_mut().zip(input.chunks_exact(4)) {
        if let Ok(b) = <[u8; 4]>::try_from(b) {
            *w = u32::from_ne_bytes(b);
        }
    }
    Ok(())
}

/// The answer to a codec kind a codec cannot decode: the page is zero-filled.
///
/// # Errors
/// [`DecodeError::BadPageLength`] for an output that is not one page, else
/// [`DecodeError::UnsupportedCodec`].
pub(crate) fn unsupported(page_size: PageSize, out: &mut [u32]) -> Result<(), DecodeError> {
    check_out(page_size, out)?;
    out.fill(0);
    Err(DecodeError::UnsupportedCodec)
}
