// MoE prefill as one grouped GEMM per projection: every expert's rows (tokens permuted by expert,
// contiguous per expert) against that expert's bf16 weights in a single launch. Blocks walk a tile
// schedule grouped by expert — for each expert, its column tiles, and within a column tile its row
// tiles — so the row tiles sharing one weight tile run side by side (one DRAM read of the weights)
// and an expert's activation rows stay in L2 across its column tiles.
// bf16 mma.sync m16n8k16 with fp32 accumulators; SPLIT: the f32 activations come as bf16 hi + lo
// planes and each product takes two MMAs (W·hi + W·lo; the weights are exactly bf16), so the result
// matches the f32-faithful two-GEMM cuBLASLt path (and the CPU backend) to ~1e-10 NMSE.
// Tile: 128 token rows × BN weight rows (BN 128; 256 measured 5% slower), 2 × BN/64 warps of 64 × 64 (8 ldmatrix.x4
// per 32 MMAs: shared-memory traffic no longer caps the MMA rate), BK 32 with padded rows (80-byte
// pitch: conflict-free ldmatrix and cp.async), STAGES-deep cp.async pipeline, one barrier a k step.
// A warp whose 64 rows run past its expert's end issues MMAs for its live 16-row slices only
// (1, 2 or 4), so the ~128-row experts of a real prefill pay little for their partial second tile.
#include "../cuda-common.cuh"

#define GG_BM 128  // token rows per tile: 2 warps × 64
#define GG_BK 32
#define GG_PK (GG_BK + 8)  // smem pitch (elements)

__device__ __forceinline__ unsigned gg_smem(const void* p) {
  unsigned r;  // generic → shared-window address (NVRTC gets no CUDA headers)
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }\n" : "=r"(r) : "l"(p));
  return r;
}
// 16-byte async copy; ok = false zero-fills (rows past an expert's end, k past the depth).
__device__ __forceinline__ void gg_cp16(void* dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(gg_smem(dst)), "l"(src), "r"(ok ? 16 : 0) : "memory");
}
__device__ __forceinline__ void gg_ldsm4(unsigned* r, const unsigned short* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(gg_smem(p)) : "memory");
}
__device__ __forceinline__ void gg_mma(float* c, const unsigned* a, unsigned b0, unsigned b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The k loop of one warp: MC = its live 16-row slices (0, 1, 2 or 4; a warp-uniform choice of one
// unrolled body). load(kt, stage) issues a block's cp.async copies of k tile kt.
template <int MC, int NP, int BN, int STAGES, typename Load>
__device__ __forceinline__ void gg_mainloop(float (&acc)[4][8][4], const unsigned short* sm, int nk, int wm, int wn, int lane, Load& load) {
  constexpr int AE = GG_BM * GG_PK, SE = NP * AE + BN * GG_PK;
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < nk) load(s, s);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  }
  for (int kt = 0; kt < nk; kt++) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 2) : "memory");
    __syncthreads();  // tile kt landed for everyone; stage (kt − 1) % STAGES is free again
    if (kt + STAGES - 1 < nk) load(kt + STAGES - 1, (kt + STAGES - 1) % STAGES);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    if constexpr (MC > 0) {
      const unsigned short* sA = sm + (kt % STAGES) * SE;
      const unsigned short* sB = sA + NP * AE;
#pragma unroll
      for (int ks = 0; ks < GG_BK / 16; ks++) {
        unsigned a[NP][MC][4];
#pragma unroll
        for (int p = 0; p < NP; p++)
#pragma unroll
          for (int mi = 0; mi < MC; mi++) gg_ldsm4(a[p][mi], sA + p * AE + (wm * 64 + mi * 16 + (lane & 15)) * GG_PK + ks * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int np = 0; np < 4; np++) {
          unsigned bf[4];
          gg_ldsm4(bf, sB + (wn * 64 + np * 16 + (lane & 7) + ((lane >> 4) << 3)) * GG_PK + ks * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
          for (int p = 0; p < NP; p++)
#pragma unroll
            for (int mi = 0; mi < MC; mi++) {
              gg_mma(acc[mi][2 * np], a[p][mi], bf[0], bf[1]);
              gg_mma(acc[mi][2 * np + 1], a[p][mi], bf[2], bf[3]);
            }
        }
      }
    }
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");  // nothing left in flight at exit
}

// sched [G][4] per expert with rows, in expert order: {first block, expert, first row, rows}.
// Block b of the group: column tile (b − first) / rowTiles, row tile (b − first) % rowTiles.
// Row m of the A operand is aHi/aLo row tok[m] (tok: the permutation, so the gate/up GEMM reads the
// token's row of x as converted once per token: no [T·K, C] gathered copy), or row m when tok is null.
//
// GLU (gate/up): W = w13 [E][2F][Kd]; a column tile covers BN/2 features f0..: B-tile row j is
// gate row f (j % 64 < 32) or up row F + f (else) of f = f0 + 32·(j / 64) + j % 32, so each warp holds
// gate and up of the same features in one thread's registers: h = silu(g)·u goes out as bf16 hi
// (+ lo) [rows, F] for the down GEMM, and the [rows, 2F] f32 gate/up never reaches memory.
// Plain (down): W = w2 [E][N][Kd]; y [rows, N] f32.
template <bool GLU, bool SPLIT, int BN, int STAGES>
__device__ __forceinline__ void grouped_gemm(float* __restrict__ y, unsigned short* __restrict__ hHi, unsigned short* __restrict__ hLo, const unsigned short* __restrict__ aHi,
                                             const unsigned short* __restrict__ aLo, const int* __restrict__ tok, const unsigned short* __restrict__ w,
                                             const int* __restrict__ sched, int G, int N, int Kd) {
  constexpr int NT = BN;  // threads: 2 × BN/64 warps
  constexpr int NP = SPLIT ? 2 : 1;
  constexpr int AE = GG_BM * GG_PK, BE = BN * GG_PK, SE = NP * AE + BE;  // elements per stage
  constexpr int AL = GG_BM * GG_BK / 8 / NT, BL = BN * GG_BK / 8 / NT;  // 16-byte chunks per thread
  constexpr int RS = NT / 4;                                             // rows between a thread's chunks
  extern __shared__ uint4 ggRaw[];
  unsigned short* sm = reinterpret_cast<unsigned short*>(ggRaw);

  // Find the expert group of this block (sched is sorted by first block; G ≤ E ≤ a few hundred).
  const int b = blockIdx.x;
  int lo = 0, hi = G - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (sched[4 * mid] <= b) lo = mid;
    else hi = mid - 1;
  }
  const int* sg = sched + 4 * lo;
  const int e = sg[1], r0 = sg[2], rows = sg[3];
  const int rowTiles = (rows + GG_BM - 1) / GG_BM;
  const int local = b - sg[0], ct = local / rowTiles, rt = local % rowTiles;
  const int m0 = r0 + rt * GG_BM, mEnd = r0 + rows;  // permuted rows [m0, min(m0 + BM, mEnd))
  const int wRows = GLU ? 2 * N : N;                 // weight rows per expert (N = F for GLU)
  const unsigned short* we = w + (long long)e * wRows * Kd;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp & 1, wn = warp >> 1;
  const int g = lane >> 2, t4 = lane & 3;

  // A thread's load slots are fixed across k tiles: rows tid/4 + i·RS, k offset (tid % 4)·8.
  const int cr = tid >> 2, cc = (tid & 3) * 8;
  long long aOff[AL], bOff[BL];
  bool aOk[AL], bOk[BL];
#pragma unroll
  for (int i = 0; i < AL; i++) {
    const int m = m0 + cr + i * RS;
    aOk[i] = m < mEnd;
    aOff[i] = aOk[i] ? (long long)(tok ? tok[m] : m) * Kd + cc : 0;
  }
#pragma unroll
  for (int i = 0; i < BL; i++) {
    const int j = cr + i * RS;
    int wr;
    if constexpr (GLU) {
      const int f = ct * (BN / 2) + 32 * (j >> 6) + (j & 31);
      wr = (j & 32) ? N + f : f;
      bOk[i] = f < N;
    } else {
      wr = ct * BN + j;
      bOk[i] = wr < N;
    }
    bOff[i] = bOk[i] ? (long long)wr * Kd + cc : 0;
  }
  auto load = [&](int kt, int st) {
    unsigned short* sA = sm + st * SE;
    unsigned short* sB = sA + NP * AE;
    const int k0 = kt * GG_BK;
    const bool kok = k0 + cc < Kd;  // Kd % 8 == 0: a chunk is all in or all out
#pragma unroll
    for (int i = 0; i < AL; i++) {
      const bool ok = aOk[i] && kok;
      const long long off = ok ? aOff[i] + k0 : 0;
      gg_cp16(sA + (cr + i * RS) * GG_PK + cc, aHi + off, ok);
      if constexpr (SPLIT) gg_cp16(sA + AE + (cr + i * RS) * GG_PK + cc, aLo + off, ok);
    }
#pragma unroll
    for (int i = 0; i < BL; i++) {
      const bool ok = bOk[i] && kok;
      gg_cp16(sB + (cr + i * RS) * GG_PK + cc, we + (ok ? bOff[i] + k0 : 0), ok);
    }
  };

  float acc[4][8][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 8; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  const int nk = (Kd + GG_BK - 1) / GG_BK;
  const int live = (mEnd - (m0 + wm * 64) + 15) >> 4;  // may be ≤ 0 or > 4
  if (live >= 3) gg_mainloop<4, NP, BN, STAGES>(acc, sm, nk, wm, wn, lane, load);
  else if (live == 2) gg_mainloop<2, NP, BN, STAGES>(acc, sm, nk, wm, wn, lane, load);
  else if (live == 1) gg_mainloop<1, NP, BN, STAGES>(acc, sm, nk, wm, wn, lane, load);
  else gg_mainloop<0, NP, BN, STAGES>(acc, sm, nk, wm, wn, lane, load);

#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
      const int m = m0 + wm * 64 + mi * 16 + g + hf * 8;
      if (m >= mEnd) continue;
      if constexpr (GLU) {
#pragma unroll
        for (int nj = 0; nj < 4; nj++) {
          const int f = ct * (BN / 2) + wn * 32 + nj * 8 + 2 * t4;  // N (= F) % 8 == 0: f, f + 1 both in or out
          if (f >= N) continue;
          unsigned hv[2], lv[2];
#pragma unroll
          for (int q = 0; q < 2; q++) {
            const float gv = acc[mi][nj][2 * hf + q], uv = acc[mi][nj + 4][2 * hf + q];
            const float v = gv * sigmoidf_(gv) * uv;  // as moe_silumul_split_bf16
            const unsigned short hb = f2bf(v);
            hv[q] = hb;
            lv[q] = f2bf(v - bf2f(hb));
          }
          const long long o = (long long)m * N + f;
          *reinterpret_cast<unsigned*>(hHi + o) = hv[0] | (hv[1] << 16);
          if (hLo) *reinterpret_cast<unsigned*>(hLo + o) = lv[0] | (lv[1] << 16);
        }
      } else {
#pragma unroll
        for (int nj = 0; nj < 8; nj++) {
          const int n = ct * BN + wn * 64 + nj * 8 + 2 * t4;  // N % 8 == 0
          if (n >= N) continue;
          *reinterpret_cast<float2*>(y + (long long)m * N + n) = make_float2(acc[mi][nj][2 * hf], acc[mi][nj][2 * hf + 1]);
        }
      }
    }
}

// Shared memory: STAGES · (NP·128 + BN) · 40 · 2 bytes; threads: BN. Grid: the schedule's block
// count; N % 8 == 0 and Kd % 8 == 0 (16-byte rows; host-checked).
#define MOE_GG(NAME, GLU, SPLIT, BN, STAGES, MINB)                                                                                                                       \
  extern "C" __global__ void __launch_bounds__(BN, MINB) NAME(float* y, unsigned short* hHi, unsigned short* hLo, const unsigned short* aHi, const unsigned short* aLo, \
                                                              const int* tok, const unsigned short* w, const int* sched, int G, int N, int Kd) {                    \
    grouped_gemm<GLU, SPLIT, BN, STAGES>(y, hHi, hLo, aHi, aLo, tok, w, sched, G, N, Kd);                                                                          \
  }
MOE_GG(moe_gg_glu_split, true, true, 128, 3, 2)
MOE_GG(moe_gg_glu_bf16, true, false, 128, 4, 2)
MOE_GG(moe_gg_down_split, false, true, 128, 3, 2)
MOE_GG(moe_gg_down_bf16, false, false, 128, 4, 2)

// x [n, C] f32 → bf16 hi (+ lo when lo != null) per token, once: the gate/up GEMM gathers rows by tok.
extern "C" __global__ void moe_gg_split_rows(unsigned short* hi, unsigned short* lo, const float* x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float v = x[i];
    const unsigned short hv = f2bf(v);
    hi[i] = hv;
    if (lo) lo[i] = f2bf(v - bf2f(hv));
  }
}
