//! afl.rs entry point of the `moderation` target (`scripts/fuzz.sh moderation`).

fn main() {
    afl::fuzz!(|data: &[u8]| huashen_fuzz::moderation(data));
}
