//! The kernel command line: `key=value` words (QEMU `-append`).

/// Returns the value of the first `key=value` word of `cmdline`, if any.
pub fn value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_ascii_whitespace().find_map(|word| {
        let (k, v) = word.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// Returns the command line stored in the first `len` bytes of `buf` up to the first NUL, or
/// `""` if it is not UTF-8.
pub fn from_bytes(buf: &[u8]) -> &str {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf.get(..end)
        .and_then(|b| core::str::from_utf8(b).ok())
        .unwrap_or("")
}
