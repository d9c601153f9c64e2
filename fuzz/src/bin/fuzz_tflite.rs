//! afl.rs entry point of the `tflite` target (`scripts/fuzz.sh tflite`).

fn main() {
    afl::fuzz!(|data: &[u8]| huashen_fuzz::tflite(data));
}
