// Device helpers shared by the op kernels (included by relative path; NVRTC gets it as a named
// header). No CUDA headers: bf16 is handled as raw 16-bit words so NVRTC needs no include path.
#pragma once

#ifndef INFINITY  // NVRTC has no math.h
#define INFINITY __int_as_float(0x7f800000)
#endif

__device__ __forceinline__ float bf2f(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }
__device__ __forceinline__ float bf_lo(unsigned int u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(unsigned int u) { return __uint_as_float(u & 0xffff0000u); }

// Round to nearest even, NaN kept quiet (same bits as util/numeric.ts f32ToBf16).
__device__ __forceinline__ unsigned short f2bf(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}
__device__ __forceinline__ float round_bf(float f) { return bf2f(f2bf(f)); }

__device__ __forceinline__ float ldw(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float ldw(const unsigned short* p, long long i) { return bf2f(p[i]); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
// sh: 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* sh) {
  v = warp_sum(v);
  const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
  __syncthreads();  // sh may still be read by a previous call
  if (l == 0) sh[w] = v;
  __syncthreads();
  v = l < nw ? sh[l] : 0.f;
  return warp_sum(v);
}

__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }

__device__ __forceinline__ bool aligned16(const void* p) { return (((unsigned long long)p) & 15ull) == 0; }

// Warp-cooperative dot of one weight row w[0..K) with x[0..K); the sum lands in every lane.
// 16-byte loads when K and both pointers allow it (the common case at real sizes).
__device__ __forceinline__ float warp_dot(const unsigned short* w, const float* x, int K, int lane) {
  float acc = 0.f;
  if ((K & 7) == 0 && aligned16(w) && aligned16(x)) {
    const uint4* w8 = (const uint4*)w;
    const float4* x4 = (const float4*)x;
    for (int c = lane; c < (K >> 3); c += 32) {
      const uint4 u = w8[c];
      const float4 a = x4[2 * c], b = x4[2 * c + 1];
      acc += bf_lo(u.x) * a.x + bf_hi(u.x) * a.y + bf_lo(u.y) * a.z + bf_hi(u.y) * a.w +
             bf_lo(u.z) * b.x + bf_hi(u.z) * b.y + bf_lo(u.w) * b.z + bf_hi(u.w) * b.w;
    }
  } else {
    for (int c = lane; c < K; c += 32) acc += bf2f(w[c]) * x[c];
  }
  return warp_sum(acc);
}

__device__ __forceinline__ float warp_dot(const float* w, const float* x, int K, int lane) {
  float acc = 0.f;
  if ((K & 3) == 0 && aligned16(w) && aligned16(x)) {
    const float4* w4 = (const float4*)w;
    const float4* x4 = (const float4*)x;
    for (int c = lane; c < (K >> 2); c += 32) {
      const float4 a = w4[c], b = x4[c];
      acc += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
    }
  } else {
    for (int c = lane; c < K; c += 32) acc += w[c] * x[c];
  }
  return warp_sum(acc);
}

// Dot of 8 bf16 weights (one 16-byte load) with 8 f32 values (two float4).
__device__ __forceinline__ float dot8(const uint4 u, const float4 a, const float4 b) {
  return bf_lo(u.x) * a.x + bf_hi(u.x) * a.y + bf_lo(u.y) * a.z + bf_hi(u.y) * a.w +
         bf_lo(u.z) * b.x + bf_hi(u.z) * b.y + bf_lo(u.w) * b.z + bf_hi(u.w) * b.w;
}
