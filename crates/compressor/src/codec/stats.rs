//! Per-codec statistics kept with relaxed atomics (they are counters, nothing is ordered by
//! them), and plain snapshots of them.

use machvm_sync::atomic::{AtomicU64, Ordering};

/// Counters of one codec inside a [`PageCodec`](super::PageCodec) implementation.
#[derive(Debug, Default)]
pub struct CodecCounters {
    attempts: AtomicU64,
    wins: AtomicU64,
    failures: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// A copy of [`CodecCounters`] at one moment (each field read on its own: a snapshot taken
/// while pages are compressed may mix counts from before and after one page).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodecCountersSnapshot {
    /// Pages the codec was run on.
    pub attempts: u64,
    /// Pages whose stored form is this codec's output.
    pub wins: u64,
    /// Pages on which the codec gave up (output over its budget, or for WKdm in a
    /// [`Hybrid`](super::Hybrid), forecast to pass the threshold).
    pub failures: u64,
    /// Page bytes given to the codec.
    pub bytes_in: u64,
    /// Bytes the codec produced on the runs that did not fail (kept or not).
    pub bytes_out: u64,
}

impl CodecCounters {
    /// Returns zeroed counters.
    #[must_use]
    pub fn new() -> Self {
        Self {
            attempts: AtomicU64::new(0),
            wins: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    /// Counts one run over `bytes_in` page bytes: `Some(len)` produced `len` bytes, `None`
    /// gave up.
    pub(crate) fn record_attempt(&self, bytes_in: usize, out: Option<usize>) {
        // Relaxed: independent counters; readers accept any interleaving.
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in as u64, Ordering::Relaxed);
        match out {
            Some(len) => {
                self.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
            }
            None => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts one page stored with this codec's output.
    pub(crate) fn record_win(&self) {
        self.wins.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the current values.
    #[must_use]
    pub fn snapshot(&self) -> CodecCountersSnapshot {
        CodecCountersSnapshot {
            attempts: self.attempts.load(Ordering::Relaxed),
            wins: self.wins.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// The statistics of a [`PageCodec`](super::PageCodec) of this module: one set of
/// [`CodecCounters`] per codec plus the pages stored raw or as single values.
#[derive(Debug, Default)]
pub struct CodecStats {
    /// WKdm runs.
    pub wkdm: CodecCounters,
    /// LZ4 runs.
    pub lz4: CodecCounters,
    raw_pages: AtomicU64,
    single_value_pages: AtomicU64,
    decompressions: AtomicU64,
    decode_errors: AtomicU64,
}

/// A copy of [`CodecStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodecStatsSnapshot {
    /// WKdm runs.
    pub wkdm: CodecCountersSnapshot,
    /// LZ4 runs.
    pub lz4: CodecCountersSnapshot,
    /// Pages stored raw (no codec made them smaller than a page).
    pub raw_pages: u64,
    /// Pages found to be one repeated value (nothing stored).
    pub single_value_pages: u64,
    /// Successful decompressions.
    pub decompressions: u64,
    /// Decompressions that returned an error.
    pub decode_errors: u64,
}

impl CodecStats {
    /// Returns zeroed statistics.
    #[must_use]
    pub fn new() -> Self {
        Self {
            wkdm: CodecCounters::new(),
            lz4: CodecCounters::new(),
            raw_pages: AtomicU64::new(0),
            single_value_pages: AtomicU64::new(0),
            decompressions: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
        }
    }

    pub(crate) fn record_raw(&self) {
        self.raw_pages.fetch_add(1, Ordering::Relaxed);
    }

    /// The start every codec shares: checks the arguments, and reports (and counts) a page
    /// of one repeated value, which needs no codec.
    pub(crate) fn begin(
        &self,
        page_size: super::PageSize,
        page: &[u32],
        out: &[u8],
        max_encoded_len: usize,
    ) -> Result<Option<super::Encoded>, super::CompressError> {
        super::raw::check_compress_args(page_size, page, out, max_encoded_len)?;
        Ok(super::single::detect(page).map(|v| {
            self.record_single_value();
            super::Encoded::SingleValue(v)
        }))
    }

    /// Counts a win of `counters`' codec and reports its `len` bytes at the start of the
    /// output as the page.
    pub(crate) fn keep(
        counters: &CodecCounters,
        kind: super::CodecKind,
        len: usize,
    ) -> Result<super::Encoded, super::CompressError> {
        counters.record_win();
        Ok(super::Encoded::Stored { kind, len })
    }

    /// Stores `page` raw (no codec made it smaller) and counts it.
    pub(crate) fn keep_raw(
        &self,
        page: &[u32],
        out: &mut [u8],
    ) -> Result<super::Encoded, super::CompressError> {
        self.record_raw();
        super::raw::store(page, out)
    }

    pub(crate) fn record_single_value(&self) {
        self.single_value_pages.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_decode<T, E>(&self, result: &Result<T, E>) {
        let counter = if result.is_ok() {
            &self.decompressions
        } else {
            &self.decode_errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the current values.
    #[must_use]
    pub fn snapshot(&self) -> CodecStatsSnapshot {
        CodecStatsSnapshot {
            wkdm: self.wkdm.snapshot(),
            lz4: self.lz4.snapshot(),
            raw_pages: self.raw_pages.load(Ordering::Relaxed),
            single_value_pages: self.single_value_pages.load(Ordering::Relaxed),
            decompressions: self.decompressions.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
        }
    }
}
