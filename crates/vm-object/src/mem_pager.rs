//! An in-memory pager for host tests and simulators (feature `std`).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use std::sync::Mutex;

use machvm_addr::VmProt;

use crate::PagerError;
use crate::pager::{MemoryObject, PageIn, PageOutKind};

/// Counters of an [`InMemoryPager`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagerCounters {
    /// `data_request` calls.
    pub requests: u64,
    /// `data_request` calls answered with data.
    pub filled: u64,
    /// `data_return` calls that stored a page.
    pub returns: u64,
    /// `data_discard` calls that dropped a page.
    pub discards: u64,
    /// `synchronize` calls.
    pub syncs: u64,
    /// Whether `terminate` was called.
    pub terminated: bool,
}

#[derive(Debug, Default)]
struct State {
    pages: BTreeMap<u64, Vec<u8>>,
    counters: PagerCounters,
    fail_requests: bool,
    fail_returns: bool,
}

/// A pager that keeps paged-out pages in host memory: the backing store of a file (fill it
/// with [`store`](Self::store)) or of anonymous memory (it starts empty). Failures can be
/// injected to test error paths.
#[derive(Debug, Default)]
pub struct InMemoryPager {
    state: Mutex<State>,
    /// Answer `has_page` with `true` for every offset (a file pager's behaviour).
    backs_everything: bool,
}

impl InMemoryPager {
    /// An empty pager for anonymous memory (`has_page` only for stored pages).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A pager that answers for every offset, like a file's (pages never stored read as
    /// holes).
    #[must_use]
    pub fn file() -> Self {
        Self {
            backs_everything: true,
            ..Self::default()
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `data` as the page at `offset` (file contents).
    pub fn store(&self, offset: u64, data: &[u8]) {
        self.state().pages.insert(offset, data.to_vec());
    }

    /// The page stored at `offset`, if any.
    #[must_use]
    pub fn stored(&self, offset: u64) -> Option<Vec<u8>> {
        self.state().pages.get(&offset).cloned()
    }

    /// The counters so far.
    #[must_use]
    pub fn counters(&self) -> PagerCounters {
        self.state().counters
    }

    /// Makes every `data_request` fail with [`PagerError::Io`] (or stop failing).
    pub fn fail_requests(&self, fail: bool) {
        self.state().fail_requests = fail;
    }

    /// Makes every `data_return` fail with [`PagerError::NoSpace`] (or stop failing).
    pub fn fail_returns(&self, fail: bool) {
        self.state().fail_returns = fail;
    }
}

impl MemoryObject for InMemoryPager {
    fn data_request(
        &self,
        offset: u64,
        page: &mut [u8],
        _access: VmProt,
    ) -> Result<PageIn, PagerError> {
        let mut st = self.state();
        st.counters.requests += 1;
        if st.fail_requests {
            return Err(PagerError::Io);
        }
        match st.pages.get(&offset) {
            Some(data) if data.len() == page.len() => {
                page.copy_from_slice(data);
                st.counters.filled += 1;
                Ok(PageIn::Filled)
            }
            Some(_) => Err(PagerError::Io),
            None => Ok(PageIn::Absent),
        }
    }

    fn data_return(&self, offset: u64, page: &[u8], _kind: PageOutKind) -> Result<(), PagerError> {
        let mut st = self.state();
        if st.fail_returns {
            return Err(PagerError::NoSpace);
        }
        st.pages.insert(offset, page.to_vec());
        st.counters.returns += 1;
        Ok(())
    }

    fn has_page(&self, offset: u64) -> bool {
        self.backs_everything || self.state().pages.contains_key(&offset)
    }

    fn data_discard(&self, offset: u64) {
        let mut st = self.state();
        if st.pages.remove(&offset).is_some() {
            st.counters.discards += 1;
        }
    }

    fn synchronize(&self, _offset: u64, _length: u64) -> Result<(), PagerError> {
        self.state().counters.syncs += 1;
        Ok(())
    }

    fn terminate(&self) {
        self.state().counters.terminated = true;
    }
}
