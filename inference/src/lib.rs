//! Huashen models: speech (text front ends, acoustic model, vocoder, phoneme
//! timeline), face (detection, landmarks), animation and rendering. No server
//! code lives here (see ARCHITECTURE.md in the repository docs).
//!
//! Every streaming stage follows one shape: feed a chunk, get whatever output
//! is ready, flush at the end, reset to start over.

pub mod batch;
pub mod device;
pub mod face;
pub mod nn;
pub mod onnx;
pub mod resample;
pub mod speech;
pub mod tflite;
pub mod wav;

/// The CPU backend: burn's `flex` (im2col + gemm convolutions). burn's
/// ndarray backend computes the same results but its direct convolution is
/// 17–60× slower on these networks (measured in docs/BENCHMARKS.md), too
/// slow for real-time speech.
pub type Cpu = burn::backend::Flex;

/// burn, for code that is generic over the backend.
pub use burn;

/// The CUDA backend (feature `cuda`; needs the NVIDIA driver at run time:
/// probe with [`cuda_available`] before using it, burn panics without it).
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Cuda;

/// The `n`th CUDA device (check it with [`device::resolve`] first).
#[cfg(feature = "cuda")]
pub fn cuda_device(n: usize) -> burn::backend::cuda::CudaDevice {
    burn::backend::cuda::CudaDevice { index: n }
}

/// Whether an NVIDIA driver is present: its device nodes exist and its
/// library (`libcuda.so.1`, which burn's CUDA backend loads at first use)
/// can be loaded.
pub fn cuda_available() -> bool {
    device::cuda_devices() > 0 && device::cuda_library_loads()
}
