// MoE router and routed experts: warp-per-row GEMVs over gathered experts (decode), segmented
// GEMVs (batched decode), and the prefill helpers (permutation gather, combine); the prefill's grouped
// GEMM with fused SwiGLU is in moe-grouped.cu.
#include "../cuda-common.cuh"

// Warp argmax: larger value wins, ties go to the lower index (the reference's order).
__device__ __forceinline__ void warp_argmax(double& v, int& idx) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const double ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (ov > v || (ov == v && oi < idx)) {
      v = ov;
      idx = oi;
    }
  }
}

// One block per token (blockDim a multiple of 32). Scores in double so that selection agrees with
// the float64 CPU path. Dynamic shared memory: 2·E doubles + E ints (scores, selection, mask).
// G = 0: plain top-k; else group-limited (group score = sum of its top-2, keep kg groups).
extern "C" __global__ void moe_route_f32(int* ids, float* wts, const float* logits, const float* bias, int E, int K, int G, int kg, int softmax, int renorm, float renormEps, float rsf) {
  extern __shared__ double dsm[];
  double* sc = dsm;
  double* sel = dsm + E;
  int* allowed = (int*)(dsm + 2 * E);
  __shared__ double red[2];
  const int t = blockIdx.x;
  const float* lg = logits + (long long)t * E;
  if (softmax) {
    if (threadIdx.x == 0) {
      double mx = -INFINITY;
      for (int e = 0; e < E; e++) mx = fmax(mx, (double)lg[e]);
      red[0] = mx;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) sc[e] = exp((double)lg[e] - red[0]);
    __syncthreads();
    if (threadIdx.x == 0) {
      double s = 0.0;
      for (int e = 0; e < E; e++) s += sc[e];
      red[1] = s;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) sc[e] /= red[1];
  } else {
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      const double x = lg[e];
      sc[e] = x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    sel[e] = sc[e] + (bias ? (double)bias[e] : 0.0);
    allowed[e] = 1;
  }
  __syncthreads();
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  if (G > 0) {
    // Group scores, one lane per group (lanes loop when G > 32), then kg rounds of warp argmax.
    const int size = E / G;
    double gsc[4];  // G ≤ 128
    for (int r = 0; r < 4; r++) {
      const int g = lane + 32 * r;
      double a = -INFINITY, b = -INFINITY;
      if (g < G)
        for (int e = g * size; e < (g + 1) * size; e++) {
          const double x = sel[e];
          if (x > a) { b = a; a = x; } else if (x > b) b = x;
        }
      gsc[r] = g < G ? (size == 1 ? a : a + b) : -INFINITY;
    }
    unsigned int keep[4] = {0u, 0u, 0u, 0u};
    for (int round = 0; round < kg; round++) {
      double v = -INFINITY;
      int idx = 0x7fffffff;
      for (int r = 0; r < 4; r++) {
        const int g = lane + 32 * r;
        if (g < G && !keep[r] && (gsc[r] > v || (gsc[r] == v && g < idx))) { v = gsc[r]; idx = g; }
      }
      warp_argmax(v, idx);
      for (int r = 0; r < 4; r++)
        if (lane + 32 * r == idx) keep[r] = 1u;
    }
    for (int r = 0; r < 4; r++) {
      const int g = lane + 32 * r;
      if (g < G && !keep[r])
        for (int e = g * size; e < (g + 1) * size; e++) allowed[e] = 0;
    }
    __syncwarp();
  }
  double total = 0.0;
  for (int k = 0; k < K; k++) {
    double v = -INFINITY;
    int idx = 0x7fffffff;
    for (int e = lane; e < E; e += 32)
      if (allowed[e] && (sel[e] > v || (sel[e] == v && e < idx))) { v = sel[e]; idx = e; }
    warp_argmax(v, idx);
    if (lane == 0) {
      allowed[idx] = 0;
      ids[(long long)t * K + k] = idx;
      total += sc[idx];
    }
    __syncwarp();
  }
  if (lane == 0) {
    const double denom = renorm ? total + (double)renormEps : 1.0;
    for (int k = 0; k < K; k++) wts[(long long)t * K + k] = (float)(sc[ids[(long long)t * K + k]] / denom * (double)rsf);
  }
}

// h [TK, F] = silu(G_e x_t) ⊙ U_e x_t for pair p = t·K + k, e = ids[p]; a warp per (p, f).
// w13 [E·2F, C]: per expert F gate rows then F up rows. grid (ceil(F / warps), T·K).
template <typename W>
__device__ void up(float* h, const float* x, const int* ids, const W* w13, int K, int C, int F) {
  const int lane = threadIdx.x & 31;
  const int f = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (f >= F) return;
  const long long p = blockIdx.y;
  const long long e = ids[p];
  const float* xt = x + (p / K) * C;
  const float g = warp_dot(w13 + (e * 2 * F + f) * C, xt, C, lane);
  const float u = warp_dot(w13 + (e * 2 * F + F + f) * C, xt, C, lane);
  if (lane == 0) h[p * F + f] = g * sigmoidf_(g) * u;
}
extern "C" __global__ void moe_up_bf16(float* h, const float* x, const int* ids, const unsigned short* w13, int K, int C, int F) { up(h, x, ids, w13, K, C, F); }
extern "C" __global__ void moe_up_f32(float* h, const float* x, const int* ids, const float* w13, int K, int C, int F) { up(h, x, ids, w13, K, C, F); }

// y [TK, C] = W2_e h_p; w2 [E·C, F]. grid (ceil(C / warps), T·K).
template <typename W>
__device__ void down(float* y, const float* h, const int* ids, const W* w2, int C, int F) {
  const int lane = threadIdx.x & 31;
  const int c = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (c >= C) return;
  const long long p = blockIdx.y;
  const long long e = ids[p];
  const float d = warp_dot(w2 + (e * C + c) * F, h + p * F, F, lane);
  if (lane == 0) y[p * C + c] = d;
}
extern "C" __global__ void moe_down_bf16(float* y, const float* h, const int* ids, const unsigned short* w2, int C, int F) { down(y, h, ids, w2, C, F); }
extern "C" __global__ void moe_down_f32(float* y, const float* h, const int* ids, const float* w2, int C, int F) { down(y, h, ids, w2, C, F); }

// out [T, C] = Σ_k wts[t, k] · y[t·K + k] in k order (deterministic, no atomics).
extern "C" __global__ void moe_combine_f32(float* out, const float* y, const float* wts, long long T, int K, int C) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < T * C; i += (long long)gridDim.x * blockDim.x) {
    const long long t = i / C, c = i % C;
    float acc = 0.f;
    for (int k = 0; k < K; k++) acc += wts[t * K + k] * y[(t * K + k) * C + c];
    out[i] = acc;
  }
}

// ---- Faster routed-expert paths (bf16 weights, K % 8 == 0, 16-byte aligned rows; host-checked).

// Gathered, T ≤ 8 (decode): as moe_up/moe_down above but the gate and up rows stream together with
// four 16-byte loads in flight per lane (the v1 loop issued one load, then waited on it).
extern "C" __global__ void __launch_bounds__(256) moe_up2_bf16(float* __restrict__ h, const float* __restrict__ x, const int* __restrict__ ids, const unsigned short* __restrict__ w13, int K, int C, int F) {
  const int lane = threadIdx.x & 31;
  const int f = blockIdx.x * 8 + (threadIdx.x >> 5);
  if (f >= F) return;
  const long long p = blockIdx.y, e = ids[p];
  const uint4* g4 = (const uint4*)(w13 + (e * 2 * F + f) * C);
  const uint4* u4 = (const uint4*)(w13 + (e * 2 * F + F + f) * C);
  const float4* x4 = (const float4*)(x + (p / K) * C);
  float ga = 0.f, ua = 0.f;
  const int nv = C >> 3;
  int c = lane;
  for (; c + 32 < nv; c += 64) {
    const uint4 g0 = g4[c], g1 = g4[c + 32], u0 = u4[c], u1 = u4[c + 32];
    const float4 a0 = x4[2 * c], b0 = x4[2 * c + 1], a1 = x4[2 * c + 64], b1 = x4[2 * c + 65];
    ga += dot8(g0, a0, b0) + dot8(g1, a1, b1);
    ua += dot8(u0, a0, b0) + dot8(u1, a1, b1);
  }
  for (; c < nv; c += 32) {
    const float4 a = x4[2 * c], b = x4[2 * c + 1];
    ga += dot8(g4[c], a, b);
    ua += dot8(u4[c], a, b);
  }
  ga = warp_sum(ga);
  ua = warp_sum(ua);
  if (lane == 0) h[p * F + f] = ga * sigmoidf_(ga) * ua;
}

extern "C" __global__ void __launch_bounds__(256) moe_down2_bf16(float* __restrict__ y, const float* __restrict__ h, const int* __restrict__ ids, const unsigned short* __restrict__ w2, int C, int F) {
  const int lane = threadIdx.x & 31;
  const int c0 = blockIdx.x * 8 + (threadIdx.x >> 5);
  if (c0 >= C) return;
  const long long p = blockIdx.y, e = ids[p];
  const uint4* w4 = (const uint4*)(w2 + (e * C + c0) * F);
  const float4* h4 = (const float4*)(h + p * F);
  const int nv = F >> 3;
  float acc = 0.f;
  int c = lane;
  for (; c + 96 < nv; c += 128) {
    uint4 u[4];
#pragma unroll
    for (int j = 0; j < 4; j++) u[j] = w4[c + 32 * j];
#pragma unroll
    for (int j = 0; j < 4; j++) acc += dot8(u[j], h4[2 * (c + 32 * j)], h4[2 * (c + 32 * j) + 1]);
  }
  for (; c < nv; c += 32) acc += dot8(w4[c], h4[2 * c], h4[2 * c + 1]);
  acc = warp_sum(acc);
  if (lane == 0) y[p * C + c0] = acc;
}

// Segmented, 8 < T (batched decode): pairs sorted by expert and cut into segments of ≤ 8 pairs of
// one expert (segs = [count, {expert, first, n}...] into `pairs`), so each weight row is read once
// per segment rather than once per pair. Outputs stay indexed by pair: order-independent.
#define SEG_MAX 8

// One block: pairs grouped by expert (stable, pair order within an expert) and the segment list,
// on the device so a batched decode step needs no host round trip (and can be a CUDA graph).
// The segment kernels run over an upper bound of segments; blocks past segs[0] exit at once.
// smem: n + 2·(E + 1) ints.
extern "C" __global__ void moe_sort_seg_i32(int* pairs, int* segs, const int* ids, int n, int E) {
  extern __shared__ int ssm[];
  int* sid = ssm;  // ids [n]
  int* start = ssm + n;  // [E + 1] first pair of each expert
  int* sstart = start + E + 1;  // [E + 1] first segment of each expert
  for (int p = threadIdx.x; p < n; p += blockDim.x) sid[p] = ids[p];
  for (int e = threadIdx.x; e <= E; e += blockDim.x) start[e] = 0;
  __syncthreads();
  for (int p = threadIdx.x; p < n; p += blockDim.x) atomicAdd(&start[sid[p] + 1], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    sstart[0] = 0;
    for (int e = 0; e < E; e++) {
      sstart[e + 1] = sstart[e] + (start[e + 1] + SEG_MAX - 1) / SEG_MAX;
      start[e + 1] += start[e];
    }
    segs[0] = sstart[E];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    int at = start[e];
    for (int p = 0; p < n; p++)
      if (sid[p] == e) pairs[at++] = p;
    for (int j = 0, i = start[e]; i < start[e + 1]; j++, i += SEG_MAX) {
      int* sg = segs + 1 + 3 * (sstart[e] + j);
      sg[0] = e;
      sg[1] = i;
      sg[2] = min(SEG_MAX, start[e + 1] - i);
    }
  }
}
extern "C" __global__ void __launch_bounds__(256) moe_up_seg_bf16(float* __restrict__ h, const float* __restrict__ x, const int* __restrict__ pairs, const int* __restrict__ segs, const unsigned short* __restrict__ w13, int K, int C, int F) {
  const int lane = threadIdx.x & 31;
  const int f = blockIdx.x * 8 + (threadIdx.x >> 5);
  if (f >= F) return;
  if ((int)blockIdx.y >= segs[0]) return;
  const int* sg = segs + 1 + 3 * blockIdx.y;
  const long long e = sg[0];
  const int first = sg[1], cnt = sg[2];
  const uint4* g4 = (const uint4*)(w13 + (e * 2 * F + f) * C);
  const uint4* u4 = (const uint4*)(w13 + (e * 2 * F + F + f) * C);
  const float4* xs[SEG_MAX];
#pragma unroll
  for (int i = 0; i < SEG_MAX; i++) xs[i] = (const float4*)(x + (long long)(pairs[first + (i < cnt ? i : 0)] / K) * C);
  float ga[SEG_MAX], ua[SEG_MAX];
#pragma unroll
  for (int i = 0; i < SEG_MAX; i++) ga[i] = ua[i] = 0.f;
  for (int c = lane; c < (C >> 3); c += 32) {
    const uint4 g = g4[c], u = u4[c];
#pragma unroll
    for (int i = 0; i < SEG_MAX; i++)
      if (i < cnt) {
        const float4 a = xs[i][2 * c], b = xs[i][2 * c + 1];
        ga[i] += dot8(g, a, b);
        ua[i] += dot8(u, a, b);
      }
  }
#pragma unroll
  for (int i = 0; i < SEG_MAX; i++)
    if (i < cnt) {
      const float g = warp_sum(ga[i]), u = warp_sum(ua[i]);
      if (lane == 0) h[(long long)pairs[first + i] * F + f] = g * sigmoidf_(g) * u;
    }
}

extern "C" __global__ void __launch_bounds__(256) moe_down_seg_bf16(float* __restrict__ y, const float* __restrict__ h, const int* __restrict__ pairs, const int* __restrict__ segs, const unsigned short* __restrict__ w2, int C, int F) {
  const int lane = threadIdx.x & 31;
  const int c0 = blockIdx.x * 8 + (threadIdx.x >> 5);
  if (c0 >= C) return;
  if ((int)blockIdx.y >= segs[0]) return;
  const int* sg = segs + 1 + 3 * blockIdx.y;
  const long long e = sg[0];
  const int first = sg[1], cnt = sg[2];
  const uint4* w4 = (const uint4*)(w2 + (e * C + c0) * F);
  const float4* hs[SEG_MAX];
#pragma unroll
  for (int i = 0; i < SEG_MAX; i++) hs[i] = (const float4*)(h + (long long)pairs[first + (i < cnt ? i : 0)] * F);
  float acc[SEG_MAX];
#pragma unroll
  for (int i = 0; i < SEG_MAX; i++) acc[i] = 0.f;
  for (int c = lane; c < (F >> 3); c += 32) {
    const uint4 u = w4[c];
#pragma unroll
    for (int i = 0; i < SEG_MAX; i++)
      if (i < cnt) acc[i] += dot8(u, hs[i][2 * c], hs[i][2 * c + 1]);
  }
#pragma unroll
  for (int i = 0; i < SEG_MAX; i++)
    if (i < cnt) {
      const float s = warp_sum(acc[i]);
      if (lane == 0) y[(long long)pairs[first + i] * C + c0] = s;
    }
}

// ---- Prefill (large T): tokens permuted by expert, one cuBLASLt GEMM per expert on contiguous rows.
// xs rows i = x[pairs[i] / K] as bf16 hi (+ lo when lo != null: f32-faithful two-GEMM split).
extern "C" __global__ void moe_gather_split_bf16(unsigned short* hi, unsigned short* lo, const float* x, const int* pairs, int K, int C, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n * C; i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / C, c = i % C;
    const float v = x[(long long)(pairs[r] / K) * C + c];
    const unsigned short hv = f2bf(v);
    hi[i] = hv;
    if (lo) lo[i] = f2bf(v - bf2f(hv));
  }
}

// gu [n, 2F] (gate | up per row) → silu(gate)·up split into bf16 hi (+ lo) for the down GEMM.
extern "C" __global__ void moe_silumul_split_bf16(unsigned short* hi, unsigned short* lo, const float* gu, int F, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n * F; i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / F, f = i % F;
    const float g = gu[r * 2 * F + f], u = gu[r * 2 * F + F + f];
    const float v = g * sigmoidf_(g) * u;
    const unsigned short hv = f2bf(v);
    hi[i] = hv;
    if (lo) lo[i] = f2bf(v - bf2f(hv));
  }
}

// out [T, C] = Σ_k wts[t, k] · yp[inv[t·K + k]] in k order (yp rows in permuted order).
extern "C" __global__ void moe_combine_perm_f32(float* out, const float* yp, const float* wts, const int* inv, long long T, int K, int C) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < T * C; i += (long long)gridDim.x * blockDim.x) {
    const long long t = i / C, c = i % C;
    float acc = 0.f;
    for (int k = 0; k < K; k++) acc += wts[t * K + k] * yp[(long long)inv[t * K + k] * C + c];
    out[i] = acc;
  }
}
