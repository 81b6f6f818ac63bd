//! `vm.swapusage`: how much swap exists and how much of it holds data.

use core::fmt;

/// Swap usage, as `sysctl vm.swapusage` reports it: total bytes of the swap files, bytes of
/// slots holding records, bytes free, and whether records are encrypted.
///
/// `Display` prints it the way macOS does, in MiB with two decimals:
///
/// ```
/// use machvm_pager::SwapUsage;
///
/// let usage = SwapUsage {
///     total_bytes: 2048 << 20,
///     used_bytes: (1024 << 20) + (512 << 10),
///     free_bytes: (1023 << 20) + (512 << 10),
///     encrypted: true,
/// };
/// assert_eq!(
///     usage.to_string(),
///     "vm.swapusage: total = 2048.00M  used = 1024.50M  free = 1023.50M  (encrypted)"
/// );
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapUsage {
    /// Bytes of all swap files.
    pub total_bytes: u64,
    /// Bytes of the slots that hold a record.
    pub used_bytes: u64,
    /// `total_bytes - used_bytes`.
    pub free_bytes: u64,
    /// Whether records are encrypted.
    pub encrypted: bool,
}

/// Writes `bytes` in MiB with two decimals, rounded half up.
fn mib(f: &mut fmt::Formatter<'_>, bytes: u64) -> fmt::Result {
    let hundredths = (u128::from(bytes) * 100 + (1 << 19)) >> 20;
    write!(f, "{}.{:02}M", hundredths / 100, hundredths % 100)
}

impl fmt::Display for SwapUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("vm.swapusage: total = ")?;
        mib(f, self.total_bytes)?;
        f.write_str("  used = ")?;
        mib(f, self.used_bytes)?;
        f.write_str("  free = ")?;
        mib(f, self.free_bytes)?;
        if self.encrypted {
            f.write_str("  (encrypted)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn empty_and_unencrypted_usage() {
        assert_eq!(
            SwapUsage::default().to_string(),
            "vm.swapusage: total = 0.00M  used = 0.00M  free = 0.00M"
        );
        let u = SwapUsage {
            total_bytes: 65536 + 512,
            used_bytes: 65536 + 512,
            free_bytes: 0,
            encrypted: true,
        };
        assert_eq!(
            u.to_string(),
            "vm.swapusage: total = 0.06M  used = 0.06M  free = 0.00M  (encrypted)"
        );
        let big = SwapUsage {
            total_bytes: u64::MAX,
            ..SwapUsage::default()
        };
        assert!(
            big.to_string()
                .starts_with("vm.swapusage: total = 17592186044416.00M")
        );
    }
}
