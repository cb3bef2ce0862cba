// MLA prefill in the expanded form (spec §5.2) on tensor cores. The context's latent rows are
// expanded per head to k_nope and v by a cuBLASLt GEMM against kv_b (host side); these kernels
// gather the latent rows, repack the GEMM output as per-head bf16 tiles, and run a flash-style
// causal attention: bf16 mma.sync m16n8k16, fp32 accumulators, online softmax in fp32 (log2 domain).
// q·k = q_nope·k_nope (per head) + q_pe·k_pe (the one shared k_pe head, read once per key tile).
// SPLIT: every bf16 operand is a hi + lo pair and each product takes three MMAs (hi·hi + hi·lo +
// lo·hi), so the result stays near f32 (the CPU backend's numbers) at three times the MMA work.
// PSPLIT without SPLIT ("bf16ops", MatmulInputs 'bf16'): q, k and v are bf16 (one MMA for q·k) but the
// probabilities are a hi + lo pair (two MMAs for P·v), as the CPU backend computes that mode.
#include "../cuda-common.cuh"
#include "../tensor-core.cuh"

#define FL_BM 64       // queries per block: 4 warps × 16 rows
#define FL_THREADS 128

// ckv rows of context positions 0..ctx-1 (from the paged cache, f32 or bf16: kernel suffix) as f32
// (ckvF) or bf16 (ckvB); k_pe as bf16 hi (+ lo), zero-padded to DRP columns. One block per position.
// A bf16 cache's values are bf16 already: their bf16 copies are exact and their lo parts zero.
// roundF: the f32 copies are rounded to bf16 values (bf16ops with an f32 cache: the expansion
// GEMM stays f32 but takes bf16 latents, as the CPU does).
template <typename C>
__device__ void flash_gather(float* ckvF, unsigned short* ckvB, unsigned short* kpeHi, unsigned short* kpeLo, const C* cache, const int* rows, int L, int Dr, int DRP, int roundF) {
  const long long s = blockIdx.x;
  const C* src = cache + (long long)rows[s] * (L + Dr);
  for (int c = threadIdx.x; c < L; c += blockDim.x) {
    const float v = ldw(src, c);
    if (ckvF) ckvF[s * L + c] = roundF ? round_bf(v) : v;
    else ckvB[s * L + c] = f2bf(v);
  }
  for (int c = threadIdx.x; c < DRP; c += blockDim.x) {
    const float v = c < Dr ? ldw(src, L + c) : 0.f;
    const unsigned short hb = f2bf(v);
    kpeHi[s * DRP + c] = hb;
    if (kpeLo) kpeLo[s * DRP + c] = f2bf(v - bf2f(hb));
  }
}
extern "C" __global__ void mla_flash_gather(float* ckvF, unsigned short* ckvB, unsigned short* kpeHi, unsigned short* kpeLo, const float* cache, const int* rows, int L, int Dr, int DRP, int roundF) {
  flash_gather(ckvF, ckvB, kpeHi, kpeLo, cache, rows, L, Dr, DRP, roundF);
}
extern "C" __global__ void mla_flash_gather_bf16(float* ckvF, unsigned short* ckvB, unsigned short* kpeHi, unsigned short* kpeLo, const unsigned short* cache, const int* rows, int L, int Dr, int DRP, int roundF) {
  flash_gather(ckvF, ckvB, kpeHi, kpeLo, cache, rows, L, Dr, DRP, roundF);
}

extern "C" __global__ void mla_flash_tobf16(unsigned short* dst, const float* src, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) dst[i] = f2bf(src[i]);
}

// kv [rows, H, Dn+Dv] f32 (kv_b applied to context rows r0..r0+rows-1) → kn [H, ctx, DNP] and
// v [H, ctx, DVP] bf16 hi (+ lo), zero-padded. Grid (rows, H).
extern "C" __global__ void mla_flash_pack_kv(unsigned short* knHi, unsigned short* knLo, unsigned short* vHi, unsigned short* vLo, const float* kv, int r0, int ctx, int H, int Dn, int Dv, int DNP, int DVP) {
  const int r = blockIdx.x, h = blockIdx.y;
  const float* src = kv + ((long long)r * H + h) * (Dn + Dv);
  const long long s = r0 + r;
  for (int c = threadIdx.x; c < DNP + DVP; c += blockDim.x) {
    const bool isK = c < DNP;
    const int j = isK ? c : c - DNP;
    const float x = isK ? (j < Dn ? src[j] : 0.f) : (j < Dv ? src[Dn + j] : 0.f);
    const unsigned short hb = f2bf(x);
    const long long o = ((long long)h * ctx + s) * (isK ? DNP : DVP) + j;
    (isK ? knHi : vHi)[o] = hb;
    if (knLo) (isK ? knLo : vLo)[o] = f2bf(x - bf2f(hb));
  }
}

__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_wait1() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }
__device__ __forceinline__ float bf_round(float x) { return __uint_as_float(tc_pack(x, 0.f) << 16); }

// s[BN/8][4] += A(16 rows of this warp, KS·16 cols, pitch P) · B(BN keys, pitch P)ᵀ.
template <int KS, int BN, int P>
__device__ __forceinline__ void qk_part(float (*s)[4], const unsigned short* qa, const unsigned short* kb, int w, int lane) {
#pragma unroll
  for (int ks = 0; ks < KS; ks++) {
    unsigned a[4];
    tc_ldsm4(a, qa + (w * 16 + (lane & 15)) * P + ks * 16 + (lane >> 4) * 8);
#pragma unroll
    for (int np = 0; np < BN / 16; np++) {
      unsigned b[4];
      tc_ldsm4(b, kb + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * P + ks * 16 + ((lane >> 3) & 1) * 8);
      tc_mma(s[2 * np], a, b[0], b[1]);
      tc_mma(s[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// o[DV/8][4] += P (16 × BN, A fragments pa[BN/16][4]) · V (BN keys × DV, pitch PV).
template <int DV, int BN, int PV>
__device__ __forceinline__ void pv_part(float (*o)[4], const unsigned (*pa)[4], const unsigned short* v, int lane) {
#pragma unroll
  for (int kk = 0; kk < BN / 16; kk++)
#pragma unroll
    for (int dp = 0; dp < DV / 16; dp++) {
      unsigned b[4];
      tc_ldsm4t(b, v + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * PV + dp * 16 + (lane >> 4) * 8);
      tc_mma(o[2 * dp], pa[kk], b[0], b[1]);
      tc_mma(o[2 * dp + 1], pa[kk], b[2], b[3]);
    }
}

// out [n, H, Dv] f32. Grid (H, ceil(n/BM)); query tiles in reverse so the longest (last) start first.
// Query i sits at ctxStart+i and sees keys 0..ctxStart+i. Kernel dims DN/DR/DV are the padded
// (multiple of 16) widths of the packed operands; Dn/Dr/Dv the model's.
template <int DN, int DR, int DV, int BN, bool SPLIT, bool PSPLIT>
__device__ __forceinline__ void flash_prefill(float* __restrict__ out, const float* __restrict__ q, const unsigned short* knH, const unsigned short* knL, const unsigned short* krH, const unsigned short* krL,
                                              const unsigned short* vH, const unsigned short* vL, int n, int ctxStart, int ctx, int H, int Dn, int Dr, int Dv, float scaleLog2) {
  constexpr int PN = DN + 8, PR = DR + 8, PV = DV + 8;  // 16 bytes of row padding: conflict-free ldmatrix
  constexpr int NP = SPLIT ? 2 : 1;                     // planes: hi (+ lo)
  constexpr int QE = FL_BM * (PN + PR), KE = BN * (PN + PR), VE = BN * PV;
  extern __shared__ uint4 smRaw[];  // uint4: 16-byte aligned for cp.async / ldmatrix
  unsigned short* sm = reinterpret_cast<unsigned short*>(smRaw);
  unsigned short* sQ = sm;                // [NP][Qn BM×PN | Qr BM×PR]
  unsigned short* sK = sm + NP * QE;      // [stage][NP][Kn BN×PN | Kr BN×PR]
  unsigned short* sV = sK + 2 * NP * KE;  // [stage][NP][BN×PV]
  const int h = blockIdx.x, q0 = (gridDim.y - 1 - blockIdx.y) * FL_BM;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const int lastKey = ctxStart + q0 + min(FL_BM, n - q0) - 1;  // keys the block's last row sees: 0..lastKey
  const int nk = lastKey / BN + 1;

  const unsigned short* gkn[2] = {knH + (long long)h * ctx * DN, SPLIT ? knL + (long long)h * ctx * DN : nullptr};
  const unsigned short* gkr[2] = {krH, krL};
  const unsigned short* gv[2] = {vH + (long long)h * ctx * DV, SPLIT ? vL + (long long)h * ctx * DV : nullptr};
  auto load = [&](int kt, int st) {
    const int k0 = kt * BN;
#pragma unroll
    for (int p = 0; p < NP; p++) {
      unsigned short* k = sK + (st * NP + p) * KE;
      unsigned short* v = sV + (st * NP + p) * VE;
      for (int e = tid; e < BN * DN / 8; e += FL_THREADS) {
        const int r = e / (DN / 8), c = e % (DN / 8) * 8, s = k0 + r;
        tc_cp16(k + r * PN + c, gkn[p] + (long long)(s < ctx ? s : 0) * DN + c, s < ctx);
      }
      for (int e = tid; e < BN * DR / 8; e += FL_THREADS) {
        const int r = e / (DR / 8), c = e % (DR / 8) * 8, s = k0 + r;
        tc_cp16(k + BN * PN + r * PR + c, gkr[p] + (long long)(s < ctx ? s : 0) * DR + c, s < ctx);
      }
      for (int e = tid; e < BN * DV / 8; e += FL_THREADS) {
        const int r = e / (DV / 8), c = e % (DV / 8) * 8, s = k0 + r;
        tc_cp16(v + r * PV + c, gv[p] + (long long)(s < ctx ? s : 0) * DV + c, s < ctx);
      }
    }
  };
  load(0, 0);
  cp_commit();

  // Q: f32 → bf16 hi (+ lo), zero-padded; rows past n are zeros (computed, never written).
  for (int e = tid; e < FL_BM * (DN + DR); e += FL_THREADS) {
    const int r = e / (DN + DR), c = e % (DN + DR), i = q0 + r;
    float x = 0.f;
    if (i < n) {
      const float* qi = q + ((long long)i * H + h) * (Dn + Dr);
      if (c < DN) x = c < Dn ? qi[c] : 0.f;
      else x = c - DN < Dr ? qi[Dn + c - DN] : 0.f;
    }
    const int off = c < DN ? r * PN + c : FL_BM * PN + r * PR + (c - DN);
    const float hi = bf_round(x);
    sQ[off] = (unsigned short)(__float_as_uint(hi) >> 16);
    if constexpr (SPLIT) sQ[QE + off] = (unsigned short)(__float_as_uint(bf_round(x - hi)) >> 16);
  }

  float o[DV / 8][4];
#pragma unroll
  for (int d = 0; d < DV / 8; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  const int limA = ctxStart + q0 + w * 16 + g, limB = limA + 8;  // last visible key of this thread's two rows

  for (int kt = 0; kt < nk; kt++) {
    const int st = kt & 1;
    if (kt + 1 < nk) load(kt + 1, st ^ 1);  // the other stage was released by the last iteration's barrier
    cp_commit();
    cp_wait1();
    __syncthreads();
    const unsigned short* kH = sK + (st * NP) * KE;
    const unsigned short* vHs = sV + (st * NP) * VE;
    float s[BN / 8][4];
#pragma unroll
    for (int j = 0; j < BN / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    qk_part<DN / 16, BN, PN>(s, sQ, kH, w, lane);
    qk_part<DR / 16, BN, PR>(s, sQ + FL_BM * PN, kH + BN * PN, w, lane);
    if constexpr (SPLIT) {
      const unsigned short* kL = kH + KE;
      qk_part<DN / 16, BN, PN>(s, sQ, kL, w, lane);
      qk_part<DR / 16, BN, PR>(s, sQ + FL_BM * PN, kL + BN * PN, w, lane);
      qk_part<DN / 16, BN, PN>(s, sQ + QE, kH, w, lane);
      qk_part<DR / 16, BN, PR>(s, sQ + QE + FL_BM * PN, kH + BN * PN, w, lane);
    }
    const int k0 = kt * BN;
    const bool mask = k0 + BN - 1 > ctxStart + q0 + w * 16;  // warp-uniform: some key past some row's limit
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        float x = s[j][e] * scaleLog2;
        if (mask && k0 + j * 8 + 2 * t4 + (e & 1) > (e < 2 ? limA : limB)) x = -INFINITY;
        s[j][e] = x;
      }
      mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
      mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    // Key 0 is visible to every row, so mx is finite from the first tile on; exp2(-inf) = 0.
    const float c0 = exp2f(m0 - mx0), c1 = exp2f(m1 - mx1);
    m0 = mx0;
    m1 = mx1;
    l0 *= c0;
    l1 *= c1;
#pragma unroll
    for (int d = 0; d < DV / 8; d++) {
      o[d][0] *= c0;
      o[d][1] *= c0;
      o[d][2] *= c1;
      o[d][3] *= c1;
    }
    unsigned pa[BN / 16][4];
    unsigned pl[PSPLIT ? BN / 16 : 1][4];
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
      s[j][0] = exp2f(s[j][0] - mx0);
      s[j][1] = exp2f(s[j][1] - mx0);
      s[j][2] = exp2f(s[j][2] - mx1);
      s[j][3] = exp2f(s[j][3] - mx1);
      l0 += s[j][0] + s[j][1];
      l1 += s[j][2] + s[j][3];
      // A fragment of P for keys 16kk..16kk+15: tile 2kk gives regs 0/1, tile 2kk+1 regs 2/3.
      const int kk = j >> 1, hf = (j & 1) * 2;
      pa[kk][hf] = tc_pack(s[j][0], s[j][1]);
      pa[kk][hf + 1] = tc_pack(s[j][2], s[j][3]);
      if constexpr (PSPLIT) {
        pl[kk][hf] = tc_pack(s[j][0] - __uint_as_float(pa[kk][hf] << 16), s[j][1] - __uint_as_float(pa[kk][hf] & 0xffff0000u));
        pl[kk][hf + 1] = tc_pack(s[j][2] - __uint_as_float(pa[kk][hf + 1] << 16), s[j][3] - __uint_as_float(pa[kk][hf + 1] & 0xffff0000u));
      }
    }
    pv_part<DV, BN, PV>(o, pa, vHs, lane);
    if constexpr (SPLIT) pv_part<DV, BN, PV>(o, pa, vHs + VE, lane);
    if constexpr (PSPLIT) pv_part<DV, BN, PV>(o, pl, vHs, lane);
    __syncthreads();  // this stage is reloaded two iterations on
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float i0 = 1.f / l0, i1 = 1.f / l1;
  const int iA = q0 + w * 16 + g, iB = iA + 8;
  float* oA = out + ((long long)iA * H + h) * Dv;
  float* oB = out + ((long long)iB * H + h) * Dv;
#pragma unroll
  for (int d = 0; d < DV / 8; d++) {
    const int col = d * 8 + 2 * t4;
    if (iA < n) {
      if (col < Dv) oA[col] = o[d][0] * i0;
      if (col + 1 < Dv) oA[col + 1] = o[d][1] * i0;
    }
    if (iB < n) {
      if (col < Dv) oB[col] = o[d][2] * i1;
      if (col + 1 < Dv) oB[col + 1] = o[d][3] * i1;
    }
  }
}

// Instantiations (name: padded DN_DR_DV, precision: bf16 / bf16ops / split); the host picks the smallest that fits
// and sizes shared memory as 2·(NP·BM·(DN+DR+16) + 2·NP·BN·(DN+DR+16) + 2·NP·BN·(DV+8)) bytes.
#define MLA_FLASH(NAME, DN, DR, DV, BN, SPLIT, PSPLIT)                                                                                                           \
  extern "C" __global__ void __launch_bounds__(FL_THREADS) NAME(float* out, const float* q, const unsigned short* knH, const unsigned short* knL,             \
                                                                 const unsigned short* krH, const unsigned short* krL, const unsigned short* vH,               \
                                                                 const unsigned short* vL, int n, int ctxStart, int ctx, int H, int Dn, int Dr, int Dv, float sl2) { \
    flash_prefill<DN, DR, DV, BN, SPLIT, PSPLIT>(out, q, knH, knL, krH, krL, vH, vL, n, ctxStart, ctx, H, Dn, Dr, Dv, sl2);                                   \
  }
MLA_FLASH(mla_flash_64_64_64_bf16, 64, 64, 64, 64, false, false)
MLA_FLASH(mla_flash_64_64_64_bf16ops, 64, 64, 64, 64, false, true)
MLA_FLASH(mla_flash_64_64_64_split, 64, 64, 64, 64, true, true)
MLA_FLASH(mla_flash_128_64_128_bf16, 128, 64, 128, 64, false, false)
MLA_FLASH(mla_flash_128_64_128_bf16ops, 128, 64, 128, 64, false, true)
MLA_FLASH(mla_flash_128_64_128_split, 128, 64, 128, 32, true, true)
