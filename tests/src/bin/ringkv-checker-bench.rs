//! `ringkv-checker-bench`: how the linearizability checker's search scales
//! (a measurement that prints, not a test). Run it in release:
//! `cargo run --release -p ringkv-tests --bin ringkv-checker-bench`.

fn main() {
    ringkv_tests::checker::selftest::bench_linearizability_search();
}
