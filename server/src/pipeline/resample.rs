//! The resampler lives with the models (the voices mix rates too).

pub use huashen_inference::resample::Resampler;
