//! afl.rs entry point of the `sdp` target (`scripts/fuzz.sh sdp`).

fn main() {
    afl::fuzz!(|data: &[u8]| huashen_fuzz::sdp(data));
}
