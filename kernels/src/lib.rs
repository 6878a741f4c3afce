//! medgen-kernels: custom tensor operations for Candle (fused attention, chunked 3D LPIPS,
//! conv3d), each as a `CustomOp` with a CPU implementation that always builds and a CUDA one
//! behind the `cuda` feature, compared against the CPU one in tests.
