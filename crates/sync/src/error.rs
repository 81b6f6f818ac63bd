//! [`SyncError`], the crate's error type.

use core::fmt;

use crate::cpu::CpuIndex;

/// Errors from the fallible parts of `machvm-sync` (the host CPU-binding helper).
///
/// A failed call leaves all state unchanged.
///
/// # Examples
///
/// ```
/// use machvm_sync::{CpuIndex, SyncError};
///
/// let err = SyncError::CpuAlreadyBound { cpu: CpuIndex::new(1) };
/// assert_eq!(err.to_string(), "cpu 1 is already bound to another live thread");
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncError {
    /// The CPU index is already bound to another live thread in the same `ThreadCpuId`.
    /// A retry can succeed once that thread's binding is dropped.
    CpuAlreadyBound {
        /// The index that was asked for.
        cpu: CpuIndex,
    },
    /// The calling thread is already bound to a CPU index in the same `ThreadCpuId`.
    /// A retry can succeed after the thread drops its existing binding.
    ThreadAlreadyBound {
        /// The index the thread is bound to now.
        cpu: CpuIndex,
    },
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CpuAlreadyBound { cpu } => {
                write!(f, "cpu {cpu} is already bound to another live thread")
            }
            Self::ThreadAlreadyBound { cpu } => {
                write!(f, "this thread is already bound to cpu {cpu}")
            }
        }
    }
}

impl core::error::Error for SyncError {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::SyncError;
    use crate::CpuIndex;
    use alloc::string::ToString;

    #[test]
    fn display_is_lowercase_with_the_index() {
        let e = SyncError::ThreadAlreadyBound {
            cpu: CpuIndex::new(3),
        };
        assert_eq!(e.to_string(), "this thread is already bound to cpu 3");
    }
}
