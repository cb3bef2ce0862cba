// GQA attention over a paged KV cache (rows [k (KVH·D) | v (KVH·D)]); a simple correct kernel:
// one block per (query head, query token), online softmax over tiles of cached tokens.
#include "../cuda-common.cuh"

#define GQA_TILE 32
#define GQA_MAX_D_PER_THREAD 8  // D ≤ 1024 with 128 threads

// Kernels that touch the cache come in two forms named by its element type: _f32 and _bf16 (the
// bf16 cache: values stored rounded to nearest even, widened exactly on reads).
__device__ __forceinline__ void stc(float* p, long long i, float x) { p[i] = x; }
__device__ __forceinline__ void stc(unsigned short* p, long long i, float x) { p[i] = f2bf(x); }

// cache rows[i] = [k[i] | v[i]]; one block per token.
template <typename C>
__device__ void cachewrite(C* cache, const float* k, const float* v, const int* rows, int KD) {
  const int i = blockIdx.x;
  const long long dst = (long long)rows[i] * 2 * KD;
  for (int c = threadIdx.x; c < 2 * KD; c += blockDim.x) stc(cache, dst + c, c < KD ? k[(long long)i * KD + c] : v[(long long)i * KD + c - KD]);
}
extern "C" __global__ void gqa_cachewrite_f32(float* cache, const float* k, const float* v, const int* rows, int KD) { cachewrite(cache, k, v, rows, KD); }
extern "C" __global__ void gqa_cachewrite_bf16(unsigned short* cache, const float* k, const float* v, const int* rows, int KD) { cachewrite(cache, k, v, rows, KD); }

// Online softmax of query i of head h over cached positions [from, last]: acc (this thread's
// value dims d = threadIdx.x + r·blockDim.x), running max m and sum, unnormalised. qsh holds the query.
template <typename C>
__device__ __forceinline__ void walk(float (&acc)[GQA_MAX_D_PER_THREAD], float& m, float& sum, float* sc, const float* qsh, const C* cache, const int* rows, int from, int last, int g, int KVH, int D, float scale) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const long long KD = (long long)KVH * D, Wc = 2 * KD;
#pragma unroll
  for (int r = 0; r < GQA_MAX_D_PER_THREAD; r++) acc[r] = 0.f;
  m = -INFINITY, sum = 0.f;
  for (int s0 = from; s0 <= last; s0 += GQA_TILE) {
    for (int ts = warp; ts < GQA_TILE; ts += nwarps) {
      const int s = s0 + ts;
      float dot = 0.f;
      if (s <= last) {
        const C* kr = cache + (long long)rows[s] * Wc + (long long)g * D;
        for (int d = lane; d < D; d += 32) dot += qsh[d] * ldw(kr, d);
        dot = warp_sum(dot);
      }
      if (lane == 0) sc[ts] = s <= last ? dot * scale : -INFINITY;
    }
    __syncthreads();
    float mt = m;
    for (int ts = 0; ts < GQA_TILE; ts++) mt = fmaxf(mt, sc[ts]);
    const float corr = expf(m - mt);
    sum *= corr;
#pragma unroll
    for (int r = 0; r < GQA_MAX_D_PER_THREAD; r++) acc[r] *= corr;
    for (int ts = 0; ts < GQA_TILE && s0 + ts <= last; ts++) {
      const float p = expf(sc[ts] - mt);
      sum += p;
      const C* vr = cache + (long long)rows[s0 + ts] * Wc + KD + (long long)g * D;
#pragma unroll
      for (int r = 0; r < GQA_MAX_D_PER_THREAD; r++) {
        const int d = threadIdx.x + r * blockDim.x;
        if (d < D) acc[r] += p * ldw(vr, d);
      }
    }
    m = mt;
    __syncthreads();
  }
}

// out [n, H·D]; query i attends to positions ≤ ctxStart + i; head h reads KV head h / (H/KVH).
template <typename C>
__device__ void attend(float* out, const float* q, const C* cache, const int* rows, int ctxStart, int H, int KVH, int D, float scale) {
  __shared__ float sc[GQA_TILE];
  extern __shared__ float qsh[];  // D floats
  const int h = blockIdx.x, i = blockIdx.y;
  for (int d = threadIdx.x; d < D; d += blockDim.x) qsh[d] = q[((long long)i * H + h) * D + d];
  __syncthreads();
  float acc[GQA_MAX_D_PER_THREAD], m, sum;
  walk(acc, m, sum, sc, qsh, cache, rows, 0, ctxStart + i, h / (H / KVH), KVH, D, scale);
  const float inv = 1.f / sum;
#pragma unroll
  for (int r = 0; r < GQA_MAX_D_PER_THREAD; r++) {
    const int d = threadIdx.x + r * blockDim.x;
    if (d < D) out[((long long)i * H + h) * D + d] = acc[r] * inv;
  }
}

// Split-context form for decode (flash-decoding): grid (H, n, S), split z covers positions
// [z·splitLen, (z+1)·splitLen); the one-block-per-(head, query) form above walks a long context alone.
template <typename C>
__device__ void attend_split(float* part, const float* q, const C* cache, const int* rows, int ctxStart, int H, int KVH, int D, float scale, int splitLen) {
  __shared__ float sc[GQA_TILE];
  extern __shared__ float qsh[];  // D floats
  const int h = blockIdx.x, i = blockIdx.y, z = blockIdx.z, S = gridDim.z;
  const int from = z * splitLen, last = min(ctxStart + i, from + splitLen - 1);
  for (int d = threadIdx.x; d < D; d += blockDim.x) qsh[d] = q[((long long)i * H + h) * D + d];
  __syncthreads();
  float acc[GQA_MAX_D_PER_THREAD], m, sum;
  walk(acc, m, sum, sc, qsh, cache, rows, from, last, h / (H / KVH), KVH, D, scale);
  // Unnormalised partial [acc (D) | max | sum] of this split; mla_combine_f32 merges the S splits.
  float* pp = part + (((long long)i * H + h) * S + z) * (D + 2);
#pragma unroll
  for (int r = 0; r < GQA_MAX_D_PER_THREAD; r++) {
    const int d = threadIdx.x + r * blockDim.x;
    if (d < D) pp[d] = acc[r];
  }
  if (threadIdx.x == 0) {
    pp[D] = m;
    pp[D + 1] = sum;
  }
}

extern "C" __global__ void gqa_attend_f32(float* out, const float* q, const float* cache, const int* rows, int ctxStart, int H, int KVH, int D, float scale) {
  attend(out, q, cache, rows, ctxStart, H, KVH, D, scale);
}
extern "C" __global__ void gqa_attend_bf16(float* out, const float* q, const unsigned short* cache, const int* rows, int ctxStart, int H, int KVH, int D, float scale) {
  attend(out, q, cache, rows, ctxStart, H, KVH, D, scale);
}
extern "C" __global__ void gqa_attend_split_f32(float* part, const float* q, const float* cache, const int* rows, int ctxStart, int H, int KVH, int D, float scale, int splitLen) {
  attend_split(part, q, cache, rows, ctxStart, H, KVH, D, scale, splitLen);
}
extern "C" __global__ void gqa_attend_split_bf16(float* part, const float* q, const unsigned short* cache, const int* rows, int ctxStart, int H, int KVH, int D, float scale, int splitLen) {
  attend_split(part, q, cache, rows, ctxStart, H, KVH, D, scale, splitLen);
}
