//! afl.rs entry point of the `image` target (`scripts/fuzz.sh image`).

fn main() {
    afl::fuzz!(|data: &[u8]| huashen_fuzz::image(data));
}
