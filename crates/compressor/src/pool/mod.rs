//! The compressed-page pool: segments, handles, compaction and swap (see issue #6).
