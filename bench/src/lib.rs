//! ringgate-bench: load generator and reference backend (filled in by the bench issue).
