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
#include "../tensor-core.cuh"

#define GG_BM 128  // token rows per tile: 2 warps × 64
#define GG_BK 32
#define GG_PK (GG_BK + 8)  // smem pitch (elements)


// The cp.async pipeline shared by both forms: the first STAGES − 1 k tiles in flight (a commit group
// each, empty past nk), and after step kt's barrier the refill of the stage step kt − 1 used.
template <int STAGES, typename Load>
__device__ __forceinline__ void gg_prologue(int nk, Load& load) {
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < nk) load(s, s);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  }
}
template <int STAGES, typename Load>
__device__ __forceinline__ void gg_refill(int kt, int nk, Load& load) {
  if (kt + STAGES - 1 < nk) load(kt + STAGES - 1, (kt + STAGES - 1) % STAGES);
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// The k loop of one warp: MC = its live 16-row slices (0, 1, 2 or 4; a warp-uniform choice of one
// unrolled body). load(kt, stage) issues a block's cp.async copies of k tile kt.
template <int MC, int NP, int BN, int STAGES, typename Load>
__device__ __forceinline__ void gg_mainloop(float (&acc)[4][8][4], const unsigned short* sm, int nk, int wm, int wn, int lane, Load& load) {
  constexpr int AE = GG_BM * GG_PK, SE = NP * AE + BN * GG_PK;
  gg_prologue<STAGES>(nk, load);
  for (int kt = 0; kt < nk; kt++) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 2) : "memory");
    __syncthreads();  // tile kt landed for everyone; stage (kt − 1) % STAGES is free again
    gg_refill<STAGES>(kt, nk, load);
    if constexpr (MC > 0) {
      const unsigned short* sA = sm + (kt % STAGES) * SE;
      const unsigned short* sB = sA + NP * AE;
#pragma unroll
      for (int ks = 0; ks < GG_BK / 16; ks++) {
        unsigned a[NP][MC][4];
#pragma unroll
        for (int p = 0; p < NP; p++)
#pragma unroll
          for (int mi = 0; mi < MC; mi++) tc_ldsm4(a[p][mi], sA + p * AE + (wm * 64 + mi * 16 + (lane & 15)) * GG_PK + ks * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int np = 0; np < 4; np++) {
          unsigned bf[4];
          tc_ldsm4(bf, sB + (wn * 64 + np * 16 + (lane & 7) + ((lane >> 4) << 3)) * GG_PK + ks * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
          for (int p = 0; p < NP; p++)
#pragma unroll
            for (int mi = 0; mi < MC; mi++) {
              tc_mma(acc[mi][2 * np], a[p][mi], bf[0], bf[1]);
              tc_mma(acc[mi][2 * np + 1], a[p][mi], bf[2], bf[3]);
            }
        }
      }
    }
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");  // nothing left in flight at exit
}

// The GLU epilogue of two adjacent features: h = silu(g)·u (as moe_silumul_split_bf16) stored at
// element o of hHi as bf16, and its remainder at o of hLo when that is set (the split down GEMM).
__device__ __forceinline__ void gg_store_glu(unsigned short* hHi, unsigned short* hLo, long long o, const float* g, const float* u) {
  unsigned hv[2], lv[2];
#pragma unroll
  for (int q = 0; q < 2; q++) {
    const float v = g[q] * sigmoidf_(g[q]) * u[q];
    const unsigned short hb = f2bf(v);
    hv[q] = hb;
    lv[q] = f2bf(v - bf2f(hb));
  }
  *reinterpret_cast<unsigned*>(hHi + o) = hv[0] | (hv[1] << 16);
  if (hLo) *reinterpret_cast<unsigned*>(hLo + o) = lv[0] | (lv[1] << 16);
}

// Block b's tile in a schedule: its expert, column tile ct (of width cw columns of N) and permuted
// rows [m0, min(m0 + bm, mEnd)). False when b owns none: an empty expert's entry or a spare block.
struct GgTile {
  int e, ct, m0, mEnd;
};
__device__ __forceinline__ bool gg_tile(const int* __restrict__ sched, int G, int b, int bm, int cw, int N, GgTile& t) {
  int lo = 0, hi = G - 1;  // sched is sorted by first block; G ≤ E ≤ a few hundred
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (sched[4 * mid] <= b) lo = mid;
    else hi = mid - 1;
  }
  const int* sg = sched + 4 * lo;
  const int rows = sg[3];
  if (rows <= 0) return false;
  const int rowTiles = (rows + bm - 1) / bm, local = b - sg[0];
  t.e = sg[1], t.ct = local / rowTiles, t.m0 = sg[2] + (local % rowTiles) * bm, t.mEnd = sg[2] + rows;
  return t.ct * cw < N;
}

// sched [G][4] per expert, in expert order: {first block, expert, first row, rows}; entries of
// empty experts (rows 0, from moe_gg_plan) own no blocks, and blocks past the last tile exit.
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

  GgTile tile;
  if (!gg_tile(sched, G, blockIdx.x, GG_BM, GLU ? BN / 2 : BN, N, tile)) return;
  const int e = tile.e, ct = tile.ct, m0 = tile.m0, mEnd = tile.mEnd;  // permuted rows [m0, min(m0 + BM, mEnd))
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
      tc_cp16(sA + (cr + i * RS) * GG_PK + cc, aHi + off, ok);
      if constexpr (SPLIT) tc_cp16(sA + AE + (cr + i * RS) * GG_PK + cc, aLo + off, ok);
    }
#pragma unroll
    for (int i = 0; i < BL; i++) {
      const bool ok = bOk[i] && kok;
      tc_cp16(sB + (cr + i * RS) * GG_PK + cc, we + (ok ? bOff[i] + k0 : 0), ok);
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
          gg_store_glu(hHi, hLo, (long long)m * N + f, acc[mi][nj] + 2 * hf, acc[mi][nj + 4] + 2 * hf);
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

// ---- Hopper (sm_90a): the same grouped GEMM on wgmma. 2 warpgroups × 64 token rows, BN = 256
// weight rows (GLU: 128 features, gate in tile columns [0, 128), up in [128, 256)), BK 64; each
// operand row is one 128-byte line in the 128B-swizzled K-major layout wgmma reads directly from
// shared memory (16-byte chunk c of row r at chunk c ^ (r % 8), tiles 1024-byte aligned), filled by
// cp.async, STAGES deep: a k step issues its MMAs, waits for the previous step's, and after a barrier
// refills that step's stage while its own MMAs run (the tensor cores see no gap between k steps).
// The accumulators (m64n256 f32: 128 a thread) follow mma.sync's C layout per n8 block.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define GG_WG_ON 1
#endif
#define GW_BM 128
#define GW_BN 256
#define GW_BK 64

// Shared-memory matrix descriptor: 128B swizzle, 8-row groups 1024 bytes apart (SBO), LBO unused.
__device__ __forceinline__ unsigned long long gw_desc(unsigned addr) {
  return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}
__device__ __forceinline__ void gg_wgmma_n256(float* d, unsigned long long da, unsigned long long db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "r"(1));
}

template <bool GLU, bool SPLIT, int STAGES>
__device__ __forceinline__ void grouped_gemm_wg(float* __restrict__ y, unsigned short* __restrict__ hHi, unsigned short* __restrict__ hLo, const unsigned short* __restrict__ aHi,
                                                const unsigned short* __restrict__ aLo, const int* __restrict__ tok, const unsigned short* __restrict__ w,
                                                const int* __restrict__ sched, int G, int N, int Kd) {
#ifdef GG_WG_ON
  constexpr int NP = SPLIT ? 2 : 1;
  constexpr int AB = GW_BM * 128, BB = GW_BN * 128, SB = NP * AB + BB;  // bytes per plane / stage
  constexpr int AL = GW_BM * 8 / 256, BL = GW_BN * 8 / 256;              // 16-byte chunks per thread
  extern __shared__ uint4 ggRaw[];
  const unsigned smBase = (tc_smem(ggRaw) + 1023u) & ~1023u;  // swizzle atoms need 1024-byte alignment

  GgTile tile;
  if (!gg_tile(sched, G, blockIdx.x, GW_BM, GLU ? GW_BN / 2 : GW_BN, N, tile)) return;
  const int e = tile.e, ct = tile.ct, m0 = tile.m0, mEnd = tile.mEnd;
  const int wRows = GLU ? 2 * N : N;
  const unsigned short* we = w + (long long)e * wRows * Kd;

  // The warpgroup index through a shuffle: provably warp-uniform, which (with the MMAs issued on
  // every warpgroup, below) lets ptxas keep the wgmma pipelined (no C7518 serialisation).
  const int tid = threadIdx.x, wg = __shfl_sync(0xffffffffu, tid >> 7, 0), lane = tid & 31, wq = (tid >> 5) & 3;
  const int cr = tid >> 3, cc = tid & 7;  // load slots: rows cr + 32·i, chunk cc (k 8·cc..8·cc+7)
  long long aOff[AL], bOff[BL];
  bool aOk[AL], bOk[BL];
#pragma unroll
  for (int i = 0; i < AL; i++) {
    const int m = m0 + cr + 32 * i;
    aOk[i] = m < mEnd;
    aOff[i] = aOk[i] ? (long long)(tok ? tok[m] : m) * Kd + cc * 8 : 0;
  }
#pragma unroll
  for (int i = 0; i < BL; i++) {
    const int j = cr + 32 * i;
    int wr;
    if constexpr (GLU) {
      const int f = ct * (GW_BN / 2) + (j & (GW_BN / 2 - 1));
      wr = j < GW_BN / 2 ? f : N + f;
      bOk[i] = f < N;
    } else {
      wr = ct * GW_BN + j;
      bOk[i] = wr < N;
    }
    bOff[i] = bOk[i] ? (long long)wr * Kd + cc * 8 : 0;
  }
  const unsigned sw = (unsigned)((cc ^ (cr & 7)) * 16);  // row r's chunk cc lands at chunk cc ^ (r % 8); (cr + 32i) % 8 = cr % 8
  auto load = [&](int kt, int st) {
    const unsigned sA = smBase + st * SB, sB = sA + NP * AB;
    const int k0 = kt * GW_BK;
    const bool kok = k0 + cc * 8 < Kd;  // Kd % 8 == 0
#pragma unroll
    for (int i = 0; i < AL; i++) {
      const bool ok = aOk[i] && kok;
      const long long off = ok ? aOff[i] + k0 : 0;
      const unsigned d = sA + (cr + 32 * i) * 128 + sw;
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(aHi + off), "r"(ok ? 16 : 0) : "memory");
      if constexpr (SPLIT) asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d + AB), "l"(aLo + off), "r"(ok ? 16 : 0) : "memory");
    }
#pragma unroll
    for (int i = 0; i < BL; i++) {
      const bool ok = bOk[i] && kok;
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sB + (cr + 32 * i) * 128 + sw), "l"(we + (ok ? bOff[i] + k0 : 0)), "r"(ok ? 16 : 0) : "memory");
    }
  };

  float d[128];
#pragma unroll
  for (int i = 0; i < 128; i++) d[i] = 0.f;
  // Whether this warpgroup's 64 rows hold a token. Its MMAs run either way (rows past the expert's
  // end are zero-filled): a branch around them would make ptxas serialise every wgmma (C7518).
  const bool live = m0 + wg * 64 < mEnd;
  const int nk = (Kd + GW_BK - 1) / GW_BK;
  gg_prologue<STAGES>(nk, load);
  for (int kt = 0; kt < nk; kt++) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 2) : "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // cp.async writes → wgmma reads
    __syncthreads();  // tile kt landed for all
    const unsigned sA = smBase + (kt % STAGES) * SB + wg * 64 * 128, sB = smBase + (kt % STAGES) * SB + NP * AB;
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int kk = 0; kk < GW_BK / 16; kk++) {
      const unsigned long long db = gw_desc(sB + kk * 32);
      gg_wgmma_n256(d, gw_desc(sA + kk * 32), db);
      if constexpr (SPLIT) gg_wgmma_n256(d, gw_desc(sA + AB + kk * 32), db);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");  // tile kt − 1's MMAs done; kt's stay in flight
    __syncthreads();  // ... in every warpgroup: tile kt − 1's stage is free; refill it while tile kt's MMAs run
    gg_refill<STAGES>(kt, nk, load);
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
  if (!live) return;

  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int hf = 0; hf < 2; hf++) {
    const int m = m0 + wg * 64 + wq * 16 + g + hf * 8;
    if (m >= mEnd) continue;
    if constexpr (GLU) {
#pragma unroll
      for (int nb = 0; nb < GW_BN / 16; nb++) {
        const int f = ct * (GW_BN / 2) + nb * 8 + 2 * t4;  // N (= F) % 8 == 0
        if (f >= N) continue;
        gg_store_glu(hHi, hLo, (long long)m * N + f, d + nb * 4 + 2 * hf, d + (nb + GW_BN / 16) * 4 + 2 * hf);
      }
    } else {
#pragma unroll
      for (int nb = 0; nb < GW_BN / 8; nb++) {
        const int n = ct * GW_BN + nb * 8 + 2 * t4;
        if (n >= N) continue;
        *reinterpret_cast<float2*>(y + (long long)m * N + n) = make_float2(d[nb * 4 + 2 * hf], d[nb * 4 + 2 * hf + 1]);
      }
    }
  }
#else
  __trap();  // built for an arch without wgmma: the host picks the mma.sync kernels there
#endif
}

// Shared memory: STAGES · (NP·128 + 256) · 128 + 1024 bytes (alignment); 256 threads.
#define MOE_GW(NAME, GLU, SPLIT, STAGES)                                                                                                                         \
  extern "C" __global__ void __launch_bounds__(256, 1) NAME(float* y, unsigned short* hHi, unsigned short* hLo, const unsigned short* aHi, const unsigned short* aLo, \
                                                            const int* tok, const unsigned short* w, const int* sched, int G, int N, int Kd) {                    \
    grouped_gemm_wg<GLU, SPLIT, STAGES>(y, hHi, hLo, aHi, aLo, tok, w, sched, G, N, Kd);                                                                         \
  }
MOE_GW(moe_gw_glu_split, true, true, 3)
MOE_GW(moe_gw_glu_bf16, true, false, 4)
MOE_GW(moe_gw_down_split, false, true, 3)
MOE_GW(moe_gw_down_bf16, false, false, 4)

// x [n, C] f32 → bf16 hi (+ lo when lo != null) per token, once: the gate/up GEMM gathers rows by tok.
extern "C" __global__ void moe_gg_split_rows(unsigned short* hi, unsigned short* lo, const float* x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float v = x[i];
    const unsigned short hv = f2bf(v);
    hi[i] = hv;
    if (lo) lo[i] = f2bf(v - bf2f(hv));
  }
}

// ---- The permutation by expert on the device (no host round trip, nothing waits for the router):
// histogram, one-block plan, scatter. counts [E] must be zero on entry (the host clears it).
extern "C" __global__ void moe_gg_count(int* counts, const int* ids, int n) {
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += gridDim.x * blockDim.x) atomicAdd(&counts[ids[p]], 1);
}

// One thread (E is a few hundred): each expert's first permuted row (cursor, advanced by the
// scatter) and both GEMMs' schedules with an entry for every expert, empty ones owning no blocks.
extern "C" __global__ void moe_gg_plan(int* cursor, int* schedUp, int* schedDown, const int* counts, int E, int colUp, int colDown, int bm) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  int at = 0, bu = 0, bd = 0;
  for (int e = 0; e < E; e++) {
    const int r = counts[e], tiles = (r + bm - 1) / bm;
    cursor[e] = at;
    schedUp[4 * e] = bu, schedUp[4 * e + 1] = e, schedUp[4 * e + 2] = at, schedUp[4 * e + 3] = r;
    schedDown[4 * e] = bd, schedDown[4 * e + 1] = e, schedDown[4 * e + 2] = at, schedDown[4 * e + 3] = r;
    at += r, bu += colUp * tiles, bd += colDown * tiles;
  }
}

// tok[slot] = token of pair p (p = t·K + k), inv[p] = slot. Slots within an expert come in atomic
// order: every GEMM row is computed from its own A row alone and the combine reads pairs in k order,
// so the order changes no value.
extern "C" __global__ void moe_gg_scatter(int* tok, int* inv, int* cursor, const int* ids, int n, int K) {
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += gridDim.x * blockDim.x) {
    const int s = atomicAdd(&cursor[ids[p]], 1);
    inv[p] = s;
    tok[s] = p / K;
  }
}
