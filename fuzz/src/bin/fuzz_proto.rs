//! afl.rs entry point of the `proto` target (`scripts/fuzz.sh proto`).

fn main() {
    afl::fuzz!(|data: &[u8]| huashen_fuzz::proto(data));
}
