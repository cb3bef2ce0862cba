// RMSNorm family, one block per row (blockDim a multiple of 32). Rows are contiguous, so the
// per-head norm is this kernel over T·H rows of width D.
#include "../cuda-common.cuh"

// out [rows, width] = x · rsqrt(mean(x²) + eps) · w [width]. out may alias x.
extern "C" __global__ void rmsnorm_rows_f32(float* out, const float* x, const float* w, int width, float eps) {
  __shared__ float sh[32];
  const long long base = (long long)blockIdx.x * width;
  float ss = 0.f;
  for (int c = threadIdx.x; c < width; c += blockDim.x) {
    const float v = x[base + c];
    ss += v * v;
  }
  ss = block_sum(ss, sh);
  const float inv = 1.f / sqrtf(ss / (float)width + eps);
  for (int c = threadIdx.x; c < width; c += blockDim.x) out[base + c] = x[base + c] * inv * w[c];
}

// residual += x (in place); out = rmsnorm(residual) · w.
extern "C" __global__ void rmsnorm_add_f32(float* out, float* residual, const float* x, const float* w, int width, float eps) {
  __shared__ float sh[32];
  const long long base = (long long)blockIdx.x * width;
  float ss = 0.f;
  for (int c = threadIdx.x; c < width; c += blockDim.x) {
    const float v = residual[base + c] + x[base + c];
    residual[base + c] = v;
    ss += v * v;
  }
  ss = block_sum(ss, sh);
  const float inv = 1.f / sqrtf(ss / (float)width + eps);
  for (int c = threadIdx.x; c < width; c += blockDim.x) out[base + c] = residual[base + c] * inv * w[c];
}
