// Elementwise ops and row gathers; grid-stride loops over 64-bit indices.
#include "../cuda-common.cuh"

#define GRID_STRIDE(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void elementwise_silu_f32(float* out, const float* x, long long n) {
  GRID_STRIDE(i, n) {
    const float v = x[i];
    out[i] = v * sigmoidf_(v);
  }
}

// out [T,F] = silu(gu[:, :F]) ⊙ gu[:, F:].
extern "C" __global__ void elementwise_silumul_f32(float* out, const float* gu, long long T, int F) {
  GRID_STRIDE(i, T * F) {
    const long long t = i / F, f = i % F;
    const float g = gu[t * 2 * F + f], u = gu[t * 2 * F + F + f];
    out[i] = g * sigmoidf_(g) * u;
  }
}

extern "C" __global__ void elementwise_add_f32(float* out, const float* a, const float* b, long long n) {
  GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

// out [R, W] = x rows idx[r] (4-byte elements: f32 or i32).
extern "C" __global__ void elementwise_gather_b32(unsigned int* out, const unsigned int* x, const int* idx, long long R, long long W) {
  GRID_STRIDE(i, R * W) out[i] = x[(long long)idx[i / W] * W + i % W];
}

extern "C" __global__ void elementwise_roundbf16_f32(float* x, long long n) {
  GRID_STRIDE(i, n) x[i] = round_bf(x[i]);
}
