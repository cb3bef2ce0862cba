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

// Float4 forms for widths % 4 == 0 (the host checks alignment): up to 1024 threads a row, so a
// 4096-wide row is one 16-byte load per thread per array instead of 16 dependent round trips
// (the scalar form above took ~17 µs a row at T = 1; these are latency-bound at a few µs).
// The second pass of the float4 forms: orow = src · rsqrt(ss / width + eps) · w, the thread's
// first float4 kept in a register from the first pass.
__device__ __forceinline__ void v4_scale_row(float4* orow, const float4* src, const float4* w4, float4 first, float ss, int width, float eps) {
  const float inv = 1.f / sqrtf(ss / (float)width + eps);
  for (int c = threadIdx.x; c < (width >> 2); c += blockDim.x) {
    const float4 v = c == threadIdx.x ? first : src[c], g = w4[c];
    orow[c] = make_float4(v.x * inv * g.x, v.y * inv * g.y, v.z * inv * g.z, v.w * inv * g.w);
  }
}

extern "C" __global__ void __launch_bounds__(1024) rmsnorm_rows_v4_f32(float* out, const float* x, const float* __restrict__ w, int width, float eps) {
  __shared__ float sh[32];
  const int n4 = width >> 2;
  const float4* xr = (const float4*)(x + (long long)blockIdx.x * width);
  float4* orow = (float4*)(out + (long long)blockIdx.x * width);
  const float4* w4 = (const float4*)w;
  float ss = 0.f;
  float4 first = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int c = threadIdx.x; c < n4; c += blockDim.x) {
    const float4 v = xr[c];
    if (c == threadIdx.x) first = v;
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  v4_scale_row(orow, xr, w4, first, block_sum(ss, sh), width, eps);
}

// residual += x (in place); out = rmsnorm(residual) · w. out must not alias residual or x.
extern "C" __global__ void __launch_bounds__(1024) rmsnorm_add_v4_f32(float* __restrict__ out, float* __restrict__ residual, const float* __restrict__ x, const float* __restrict__ w, int width, float eps) {
  __shared__ float sh[32];
  const int n4 = width >> 2;
  float4* rr = (float4*)(residual + (long long)blockIdx.x * width);
  const float4* xr = (const float4*)(x + (long long)blockIdx.x * width);
  float4* orow = (float4*)(out + (long long)blockIdx.x * width);
  const float4* w4 = (const float4*)w;
  float ss = 0.f;
  float4 first = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int c = threadIdx.x; c < n4; c += blockDim.x) {
    const float4 a = rr[c], b = xr[c];
    const float4 v = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
    rr[c] = v;
    if (c == threadIdx.x) first = v;
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  v4_scale_row(orow, rr, w4, first, block_sum(ss, sh), width, eps);
}
