//! Benchmarks live in `benches/` (criterion) and `src/bin` (the namespace comparison).
