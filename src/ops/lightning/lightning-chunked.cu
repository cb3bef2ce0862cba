// Lightning prefill in the chunked form on tensor cores (canonical semantics, D = 128). Per head,
// chunks of C = 64 tokens; for local token t of a chunk of length L with state S at its start:
//   o_t = scale · [ Σ_{u≤t} (q_t·k_u) λ^(t-u) v_u  +  λ^(t+1) (q_t·S) ]
//   S  ← λ^L S + Σ_u k_uᵀ (λ^(L-1-u) v_u)
// Grid (H, D/32): a block owns 32 value columns of one head (its S slice [128, 32] lives in the
// warps' f32 MMA accumulators across the whole call) and walks the chunks in order; Q·Kᵀ is
// recomputed per column slice. bf16 mma.sync m16n8k16 with fp32 accumulation. Operands come in two
// kinds: q, k, v (SPLIT: a bf16 hi + lo pair each) and the f32 values made here — the decayed
// scores A, the decayed values Vd, the state S (DSPLIT: hi + lo). A product takes hi·hi plus hi·lo /
// lo·hi for each split side: split (SPLIT, DSPLIT) stays near f32 (as mla-flash.cu); bf16ops (DSPLIT
// only: q, k, v rounded to bf16, MatmulInputs 'bf16', what the CPU computes in that mode); bf16
// (neither: benchmarks). Decay factors are f64 → f32 before any split.
// The next chunk's f32 q/k/v land in a staging area by cp.async while the current one computes.
#include "../cuda-common.cuh"
#include "../tensor-core.cuh"

#define LC_C 64         // chunk length
#define LC_D 128        // head dim
#define LC_N 32         // value columns per block
#define LC_THREADS 256  // 8 warps: chunk row tile and 16 output columns each (see mt, half); state rows 16w..16w+15
#define LC_PQ (LC_D + 8)  // bf16 pitches, +16 bytes: conflict-free ldmatrix
#define LC_PV (LC_N + 8)

// x0, x1 → bf16x2 hi and bf16x2 lo (x − hi, rounded).
__device__ __forceinline__ void lc_split2(float x0, float x1, unsigned& hi, unsigned& lo) {
  hi = tc_pack(x0, x1);
  lo = tc_pack(x0 - __uint_as_float(hi << 16), x1 - __uint_as_float(hi & 0xffff0000u));
}
// Four f32 → 4 bf16 hi (+ 4 lo) stored as 8-byte words.
template <bool SPLIT>
__device__ __forceinline__ void lc_store4(unsigned short* hi, unsigned short* lo, float4 x) {
  uint2 h, l;
  lc_split2(x.x, x.y, h.x, l.x);
  lc_split2(x.z, x.w, h.y, l.y);
  *reinterpret_cast<uint2*>(hi) = h;
  if constexpr (SPLIT) *reinterpret_cast<uint2*>(lo) = l;
}

// This warp's intra-chunk part for chunk rows 16·mt..16·mt+15 (NW = mt + 1 key groups of 16 are
// causal) and value columns 16·half..+15 of the block's slice: acc[nt] += (Q Kᵀ ⊙ decay mask)·V.
// NW is a template argument so every loop is straight-line code the compiler can pipeline.
template <bool SPLIT, bool DSPLIT, int NW>
__device__ __forceinline__ void lc_intra(float (*acc)[4], const unsigned short* sQ, const unsigned short* sK, const unsigned short* sV, const float* pw, int half, int lane) {
  constexpr int QE = LC_C * LC_PQ, VE = LC_C * LC_PV, mt = NW - 1;
  const int g = lane >> 2, t4 = lane & 3;
  float s[2 * NW][4];
#pragma unroll
  for (int j = 0; j < 2 * NW; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
  for (int ks = 0; ks < LC_D / 16; ks++) {
    unsigned ah[4], al[4];
    const int aoff = (16 * mt + (lane & 15)) * LC_PQ + ks * 16 + (lane >> 4) * 8;
    tc_ldsm4(ah, sQ + aoff);
    if constexpr (SPLIT) tc_ldsm4(al, sQ + QE + aoff);
#pragma unroll
    for (int np = 0; np < NW; np++) {
      unsigned bh[4], bl[4];
      const int boff = (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * LC_PQ + ks * 16 + ((lane >> 3) & 1) * 8;
      tc_ldsm4(bh, sK + boff);
      if constexpr (SPLIT) tc_ldsm4(bl, sK + QE + boff);
      tc_mma(s[2 * np], ah, bh[0], bh[1]);
      tc_mma(s[2 * np + 1], ah, bh[2], bh[3]);
      if constexpr (SPLIT) {
        tc_mma(s[2 * np], ah, bl[0], bl[1]);
        tc_mma(s[2 * np + 1], ah, bl[2], bl[3]);
        tc_mma(s[2 * np], al, bh[0], bh[1]);
        tc_mma(s[2 * np + 1], al, bh[2], bh[3]);
      }
    }
  }
  // Causal decay mask in f32, then A as bf16 hi (+ lo) A fragments: tile 2kk → regs 0/1, 2kk+1 → 2/3.
  const int tA = 16 * mt + g, tB = tA + 8;
  unsigned pa[NW][4], pl[NW][4];
#pragma unroll
  for (int j = 0; j < 2 * NW; j++) {
    const int u = 8 * j + 2 * t4;
    const float a0 = u <= tA ? s[j][0] * pw[tA - u] : 0.f;
    const float a1 = u + 1 <= tA ? s[j][1] * pw[tA - u - 1] : 0.f;
    const float a2 = u <= tB ? s[j][2] * pw[tB - u] : 0.f;
    const float a3 = u + 1 <= tB ? s[j][3] * pw[tB - u - 1] : 0.f;
    const int kk = j >> 1, hf = (j & 1) * 2;
    lc_split2(a0, a1, pa[kk][hf], pl[kk][hf]);
    lc_split2(a2, a3, pa[kk][hf + 1], pl[kk][hf + 1]);
  }
#pragma unroll
  for (int kk = 0; kk < NW; kk++) {
    unsigned bh[4], bl[4];
    const int boff = (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LC_PV + half * 16 + (lane >> 4) * 8;
    tc_ldsm4t(bh, sV + boff);
    if constexpr (SPLIT) tc_ldsm4t(bl, sV + VE + boff);
    tc_mma(acc[0], pa[kk], bh[0], bh[1]);
    tc_mma(acc[1], pa[kk], bh[2], bh[3]);
    if constexpr (SPLIT) {
      tc_mma(acc[0], pa[kk], bl[0], bl[1]);
      tc_mma(acc[1], pa[kk], bl[2], bl[3]);
    }
    if constexpr (DSPLIT) {
      tc_mma(acc[0], pl[kk], bh[0], bh[1]);
      tc_mma(acc[1], pl[kk], bh[2], bh[3]);
    }
  }
}

template <bool SPLIT, bool DSPLIT>
__device__ __forceinline__ void lightning_chunked(float* __restrict__ o, const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, float* state,
                                                  const double* decay, float scale, int n, int H, int stateBf16) {
  constexpr int NP = SPLIT ? 2 : 1, ND = DSPLIT ? 2 : 1;  // planes of q, k, v / of Vd, S
  constexpr int QE = LC_C * LC_PQ, VE = LC_C * LC_PV, SE = LC_D * LC_PV;  // one plane, in bf16 elements
  extern __shared__ uint4 smRaw[];  // uint4: 16-byte aligned for cp.async / ldmatrix
  float* fQ = reinterpret_cast<float*>(smRaw);  // staging, f32: Q [C][D], K [C][D], V [C][N]
  float* fK = fQ + LC_C * LC_D;
  float* fV = fK + LC_C * LC_D;
  unsigned short* sQ = reinterpret_cast<unsigned short*>(fV + LC_C * LC_N);  // [NP][C][PQ]
  unsigned short* sK = sQ + NP * QE;                                         // [NP][C][PQ]
  unsigned short* sV = sK + NP * QE;                                         // [NP][C][PV]
  unsigned short* sVd = sV + NP * VE;                                        // [ND][C][PV], row u · λ^(L-1-u)
  unsigned short* sS = sVd + ND * VE;                                        // [ND][D][PV], the state at the chunk start
  float* pw = reinterpret_cast<float*>(sS + ND * SE);                        // λ^m, m = 0..C

  const int h = blockIdx.x, cs = blockIdx.y * LC_N;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t4 = lane & 3;
  // Warps w and w + 4 share a scheduler (w mod 4): they take chunk row tiles w and 3 − w, so every
  // scheduler gets the same causal Q·Kᵀ work (5 key groups). half: which 16 of the 32 columns.
  const int mt = w < 4 ? w : 7 - w, half = w >> 2;
  const long long W = (long long)H * LC_D;
  const float* gq = q + (long long)h * LC_D;
  const float* gk = k + (long long)h * LC_D;
  const float* gv = v + (long long)h * LC_D + cs;
  float* st = state + (long long)h * LC_D * LC_D + cs;

  auto load = [&](int c0) {
    for (int e = tid; e < LC_C * LC_D / 4; e += LC_THREADS) {
      const int r = e / (LC_D / 4), c = e % (LC_D / 4) * 4, t = c0 + r;
      const long long off = (long long)(t < n ? t : 0) * W + c;
      tc_cp16(fQ + r * LC_D + c, gq + off, t < n);
      tc_cp16(fK + r * LC_D + c, gk + off, t < n);
    }
    for (int e = tid; e < LC_C * LC_N / 4; e += LC_THREADS) {
      const int r = e / (LC_N / 4), c = e % (LC_N / 4) * 4, t = c0 + r;
      tc_cp16(fV + r * LC_N + c, gv + (long long)(t < n ? t : 0) * W + c, t < n);
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };
  load(0);
  if (tid <= LC_C) pw[tid] = (float)exp(-decay[h] * tid);

  // State rows 16w..16w+15 in accumulator layout: S[nt][e] is row 16w + g + 8(e>>1), column 8nt + 2t4 + (e&1).
  float S[4][4];
#pragma unroll
  for (int nt = 0; nt < 4; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) S[nt][e] = st[(16 * w + g + 8 * (e >> 1)) * LC_D + 8 * nt + 2 * t4 + (e & 1)];
  // The state as bf16 hi (+ lo) B operand of q·S.
  auto storeS = [&]() {
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        unsigned hi, lo;
        lc_split2(S[nt][2 * hf], S[nt][2 * hf + 1], hi, lo);
        const int off = (16 * w + g + 8 * hf) * LC_PV + 8 * nt + 2 * t4;
        *reinterpret_cast<unsigned*>(sS + off) = hi;
        if constexpr (DSPLIT) *reinterpret_cast<unsigned*>(sS + SE + off) = lo;
      }
  };
  storeS();

  for (int c0 = 0; c0 < n; c0 += LC_C) {
    const int L = min(LC_C, n - c0);
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    __syncthreads();  // staging landed for every thread; sS written; last chunk's operands released
    for (int e = tid; e < LC_C * LC_D / 4; e += LC_THREADS) {
      const int r = e / (LC_D / 4), c = e % (LC_D / 4) * 4;
      lc_store4<SPLIT>(sQ + r * LC_PQ + c, sQ + QE + r * LC_PQ + c, *reinterpret_cast<const float4*>(fQ + r * LC_D + c));
      lc_store4<SPLIT>(sK + r * LC_PQ + c, sK + QE + r * LC_PQ + c, *reinterpret_cast<const float4*>(fK + r * LC_D + c));
    }
    for (int e = tid; e < LC_C * LC_N / 4; e += LC_THREADS) {
      const int r = e / (LC_N / 4), c = e % (LC_N / 4) * 4;
      float4 x = *reinterpret_cast<const float4*>(fV + r * LC_N + c);
      // bf16ops: Vd is the rounded v times the decay (the CPU rounds v, then computes in f32).
      if constexpr (!SPLIT && DSPLIT) x = make_float4(round_bf(x.x), round_bf(x.y), round_bf(x.z), round_bf(x.w));
      lc_store4<SPLIT>(sV + r * LC_PV + c, sV + VE + r * LC_PV + c, x);
      const float f = r < L ? pw[L - 1 - r] : 0.f;
      x.x *= f, x.y *= f, x.z *= f, x.w *= f;
      lc_store4<DSPLIT>(sVd + r * LC_PV + c, sVd + VE + r * LC_PV + c, x);
    }
    __syncthreads();
    if (c0 + LC_C < n) load(c0 + LC_C);  // staging is free: overlaps this chunk's MMAs

    // Intra-chunk A·V and inter-chunk Q·S (separate accumulators: Q·S is scaled per row after).
    float acc[2][4], qs[2][4];
#pragma unroll
    for (int j = 0; j < 2; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[j][e] = qs[j][e] = 0.f;
    switch (mt) {
      case 0: lc_intra<SPLIT, DSPLIT, 1>(acc, sQ, sK, sV, pw, half, lane); break;
      case 1: lc_intra<SPLIT, DSPLIT, 2>(acc, sQ, sK, sV, pw, half, lane); break;
      case 2: lc_intra<SPLIT, DSPLIT, 3>(acc, sQ, sK, sV, pw, half, lane); break;
      default: lc_intra<SPLIT, DSPLIT, 4>(acc, sQ, sK, sV, pw, half, lane); break;
    }
#pragma unroll
    for (int ks = 0; ks < LC_D / 16; ks++) {
      unsigned ah[4], al[4], bh[4], bl[4];
      const int aoff = (16 * mt + (lane & 15)) * LC_PQ + ks * 16 + (lane >> 4) * 8;
      const int boff = (ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LC_PV + half * 16 + (lane >> 4) * 8;
      tc_ldsm4(ah, sQ + aoff);
      tc_ldsm4t(bh, sS + boff);
      if constexpr (SPLIT) tc_ldsm4(al, sQ + QE + aoff);
      if constexpr (DSPLIT) tc_ldsm4t(bl, sS + SE + boff);
      tc_mma(qs[0], ah, bh[0], bh[1]);
      tc_mma(qs[1], ah, bh[2], bh[3]);
      if constexpr (DSPLIT) {
        tc_mma(qs[0], ah, bl[0], bl[1]);
        tc_mma(qs[1], ah, bl[2], bl[3]);
      }
      if constexpr (SPLIT) {
        tc_mma(qs[0], al, bh[0], bh[1]);
        tc_mma(qs[1], al, bh[2], bh[3]);
      }
    }
    {
      const int tA = 16 * mt + g, tB = tA + 8;
      const float fA = pw[tA + 1], fB = pw[tB + 1];
      float* oA = o + (long long)(c0 + tA) * W + (long long)h * LC_D + cs + 16 * half;
      float* oB = oA + 8 * W;
#pragma unroll
      for (int nt = 0; nt < 2; nt++) {
        const int col = 8 * nt + 2 * t4;
        if (tA < L) *reinterpret_cast<float2*>(oA + col) = make_float2(scale * (acc[nt][0] + fA * qs[nt][0]), scale * (acc[nt][1] + fA * qs[nt][1]));
        if (tB < L) *reinterpret_cast<float2*>(oB + col) = make_float2(scale * (acc[nt][2] + fB * qs[nt][2]), scale * (acc[nt][3] + fB * qs[nt][3]));
      }
    }

    // S ← λ^L S + Kᵀ Vd for state rows 16w..16w+15 (A = Kᵀ through ldmatrix.trans of K).
    const float fL = pw[L];
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) S[nt][e] *= fL;
#pragma unroll
    for (int kk = 0; kk < LC_C / 16; kk++) {
      unsigned ah[4], al[4], bh[2][4], bl[2][4];
      const int mi = lane >> 3;
      const int aoff = (kk * 16 + (lane & 7) + (mi >> 1) * 8) * LC_PQ + 16 * w + (mi & 1) * 8;
      tc_ldsm4t(ah, sK + aoff);
      if constexpr (SPLIT) tc_ldsm4t(al, sK + QE + aoff);
#pragma unroll
      for (int dp = 0; dp < 2; dp++) {
        const int boff = (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LC_PV + dp * 16 + (lane >> 4) * 8;
        tc_ldsm4t(bh[dp], sVd + boff);
        if constexpr (DSPLIT) tc_ldsm4t(bl[dp], sVd + VE + boff);
      }
#pragma unroll
      for (int dp = 0; dp < 2; dp++) {
        tc_mma(S[2 * dp], ah, bh[dp][0], bh[dp][1]);
        tc_mma(S[2 * dp + 1], ah, bh[dp][2], bh[dp][3]);
        if constexpr (DSPLIT) {
          tc_mma(S[2 * dp], ah, bl[dp][0], bl[dp][1]);
          tc_mma(S[2 * dp + 1], ah, bl[dp][2], bl[dp][3]);
        }
        if constexpr (SPLIT) {
          tc_mma(S[2 * dp], al, bh[dp][0], bh[dp][1]);
          tc_mma(S[2 * dp + 1], al, bh[dp][2], bh[dp][3]);
        }
      }
    }
    __syncthreads();  // every warp is done reading sS (q·S) before it is overwritten
    storeS();
  }

#pragma unroll
  for (int nt = 0; nt < 4; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const float x = S[nt][e];
      st[(16 * w + g + 8 * (e >> 1)) * LC_D + 8 * nt + 2 * t4 + (e & 1)] = stateBf16 ? round_bf(x) : x;
    }
}

// Grid (H, 4), 256 threads. o must not alias q, k or v (the four blocks of a head read all of q, k).
// q, k, v, o 16-byte aligned. Dynamic shared memory (bytes):
// 4·(2·C·D + C·N) + 2·NP·(2·C·PQ + C·PV) + 2·ND·(C·PV + D·PV) + 4·(C + 1).
#define LIGHTNING_CHUNKED(NAME, SPLIT, DSPLIT)                                                                                                           \
  extern "C" __global__ void __launch_bounds__(LC_THREADS) NAME(float* o, const float* q, const float* k, const float* v, float* state, const double* decay, \
                                                                 float scale, int n, int H, int stateBf16) {                                          \
    lightning_chunked<SPLIT, DSPLIT>(o, q, k, v, state, decay, scale, n, H, stateBf16);                                                                 \
  }
LIGHTNING_CHUNKED(lightning_chunked_d128_split, true, true)
LIGHTNING_CHUNKED(lightning_chunked_d128_bf16ops, false, true)
LIGHTNING_CHUNKED(lightning_chunked_d128_bf16, false, false)
