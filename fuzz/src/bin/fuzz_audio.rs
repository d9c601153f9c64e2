//! afl.rs entry point of the `audio` target (`scripts/fuzz.sh audio`).

fn main() {
    afl::fuzz!(|data: &[u8]| huashen_fuzz::audio(data));
}
