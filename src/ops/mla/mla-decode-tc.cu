// MLA decode on tensor cores, every head of a group per block (FlashMLA's shape of the problem: in
// the absorbed form all heads attend over the same latent rows, so a block that owns a slice of
// the context reads each cache row once for 32 heads instead of once per head).
//
// One query per sequence, bf16 paged latent cache, kv_lora_rank L = 512 (every v2.5 model), rope
// width Dr with (L + Dr) % 32 == 0. MD_ST-deep cp.async pipeline. Grid (S, ceil(H / 32), n): block
// (z, hg, i) covers context split z of sequence i for heads 32·hg.. (rows past H are zero queries,
// not written); sequence i's meta is [ctxStart, block table] at meta + i·metaStride, its query row
// i of q and qlat. Per tile of MD_R cache rows:
//   scores [32, R] = q_lat·ckvᵀ + q_pe·kpeᵀ   (A = the queries, bf16 hi + lo; B = cache rows, exact bf16)
//   online softmax per head (f32), P = e^(s − m) as bf16 hi + lo
//   acc [32, L] += P · ckv                    (B = cache rows through ldmatrix.trans)
// so every product is f32-faithful (two MMAs per product, the cache's values are bf16 exactly) and
// the result matches the CUDA-core kernel (mla.cu) and the CPU to ~1e-10 NMSE. Writes the same
// partials as mla_attend_*: part[((i·H + h)·S + z)·(L + 2)] = [acc (L) | max | sum], merged by
// mla_combine_f32. 4 warps: a warp's scores are rows 8w..8w+7 of the tile; its acc columns
// 128w..128w+127 (16 n8 tiles × 2 head tiles: 128 f32 a thread).
#include "../cuda-common.cuh"
#include "../tensor-core.cuh"

#define MD_L 512
#define MD_R 32    // cache rows per tile
#define MD_HB 32   // heads per block (two m16 tiles)
#define MD_PP (MD_R + 8)  // probability pitch (elements): 80-byte rows, conflict-free ldmatrix

#define MD_ST 3    // cache tiles in flight: two loading while one is used

// Shared memory (bytes), with P = Wc + 8 (odd multiple of 16 bytes: conflict-free ldmatrix):
//   q hi, q lo [32][P] bf16 · cache tiles [MD_ST][R][P] bf16 · scores [32][R + 1] f32 · P hi, lo [32][MD_PP]
//   bf16 · running max, sum, correction [32] f32 each.
extern "C" __global__ void __launch_bounds__(128) mla_decode_tc_bf16(float* part, const float* qlat, const float* q, const unsigned short* cache, const int* meta, int metaStride, int H,
                                                                     int Dn, int Dr, float scale, int bs) {
  const int Wc = MD_L + Dr, P = Wc + 8;
  extern __shared__ uint4 mdRaw[];
  unsigned short* sQh = reinterpret_cast<unsigned short*>(mdRaw);
  unsigned short* sQl = sQh + MD_HB * P;
  unsigned short* sC = sQl + MD_HB * P;
  float* sS = reinterpret_cast<float*>(sC + MD_ST * MD_R * P);
  unsigned short* sPh = reinterpret_cast<unsigned short*>(sS + MD_HB * (MD_R + 1));
  unsigned short* sPl = sPh + MD_HB * MD_PP;
  float* sM = reinterpret_cast<float*>(sPl + MD_HB * MD_PP);
  float* sL = sM + MD_HB;
  float* sCorr = sL + MD_HB;

  const int z = blockIdx.x, S = gridDim.x, h0 = blockIdx.y * MD_HB, i = blockIdx.z;  // i: the sequence (query row)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const int* m = meta + (long long)i * metaStride;
  const int ctxStart = m[0], ctx = ctxStart + 1;
  const int* bt = m + 1;
  const int per = (ctx + S - 1) / S;
  const int splitLen = (per + MD_R - 1) / MD_R * MD_R;
  const int from = z * splitLen, to = min(ctx, from + splitLen);

  // The queries of this head group as bf16 hi + lo: [q_lat (L) | q_pe (Dr)] per head.
  for (int idx = tid; idx < MD_HB * Wc; idx += blockDim.x) {
    const int hh = idx / Wc, c = idx - hh * Wc, h = h0 + hh;
    float v = 0.f;
    if (h < H) v = c < MD_L ? qlat[((long long)i * H + h) * MD_L + c] : q[((long long)i * H + h) * (Dn + Dr) + Dn + (c - MD_L)];
    const unsigned short hi = f2bf(v);
    sQh[hh * P + c] = hi;
    sQl[hh * P + c] = f2bf(v - bf2f(hi));
  }
  if (tid < MD_HB) sM[tid] = -INFINITY, sL[tid] = 0.f;

  // Tile loads: row r of the tile is context position t0 + r (zero-filled past `to`); Wc / 8 chunks a row.
  const int chunks = Wc / 8;
  auto load = [&](int t0, int st) {
    unsigned short* dst = sC + st * MD_R * P;
    for (int idx = tid; idx < MD_R * chunks; idx += blockDim.x) {
      const int r = idx / chunks, c = idx - r * chunks, s = t0 + r;
      const bool ok = s < to;
      const long long row = ok ? (long long)bt[s / bs] * bs + s % bs : 0;
      tc_cp16(dst + r * P + c * 8, cache + row * Wc + c * 8, ok);
    }
  };

  float acc[2][16][4];
#pragma unroll
  for (int mt = 0; mt < 2; mt++)
#pragma unroll
    for (int nt = 0; nt < 16; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.f;

  const int nT = from < to ? (to - from + MD_R - 1) / MD_R : 0;
#pragma unroll
  for (int s = 0; s < MD_ST - 1; s++) {
    if (s < nT) load(from + s * MD_R, s);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  }
  for (int it = 0; it < nT; it++) {
    const int t0 = from + it * MD_R;
    // Tile it + 2 into the stage tile it − 1 used (freed by the last barrier).
    if (it + MD_ST - 1 < nT) load(t0 + (MD_ST - 1) * MD_R, (it + MD_ST - 1) % MD_ST);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    asm volatile("cp.async.wait_group %0;\n" ::"n"(MD_ST - 1) : "memory");
    __syncthreads();  // tile it (and the queries) landed for everyone
    const unsigned short* sT = sC + (it % MD_ST) * MD_R * P;

    // Scores of rows 8·warp.. for both head tiles; K = Wc in steps of 32 (two k16 MMAs per ldmatrix.x4 of B).
    float sc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    for (int k0 = 0; k0 < Wc; k0 += 32) {
      unsigned b[4];
      tc_ldsm4(b, sT + (warp * 8 + (lane & 7)) * P + k0 + (lane >> 3) * 8);
#pragma unroll
      for (int kk = 0; kk < 2; kk++)
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
          unsigned ah[4], al[4];
          const int off = (mt * 16 + (lane & 15)) * P + k0 + kk * 16 + (lane >> 4) * 8;
          tc_ldsm4(ah, sQh + off);
          tc_ldsm4(al, sQl + off);
          tc_mma(sc[mt], ah, b[2 * kk], b[2 * kk + 1]);
          tc_mma(sc[mt], al, b[2 * kk], b[2 * kk + 1]);
        }
    }
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int hh = mt * 16 + g + (e >> 1) * 8, r = warp * 8 + 2 * t4 + (e & 1);
        sS[hh * (MD_R + 1) + r] = t0 + r < to ? sc[mt][e] * scale : -INFINITY;
      }
    __syncthreads();

    // Online softmax: 4 threads per head, R / 4 rows each. The tile has a live row, so m stays finite.
    {
      const int hh = tid >> 2, q4 = tid & 3;
      const float* srow = sS + hh * (MD_R + 1) + q4 * (MD_R / 4);
      float mt = -INFINITY;
#pragma unroll
      for (int j = 0; j < MD_R / 4; j++) mt = fmaxf(mt, srow[j]);
      mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
      mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
      const float mOld = sM[hh], mNew = fmaxf(mOld, mt);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < MD_R / 4; j++) {
        const float p = expf(srow[j] - mNew);  // e^-inf = 0 for the rows past `to`
        sum += p;
        const unsigned short hi = f2bf(p);
        sPh[hh * MD_PP + q4 * (MD_R / 4) + j] = hi;
        sPl[hh * MD_PP + q4 * (MD_R / 4) + j] = f2bf(p - bf2f(hi));
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      __syncwarp();
      if (q4 == 0) {
        const float corr = expf(mOld - mNew);  // 0 on the first tile (mOld = -inf)
        sCorr[hh] = corr;
        sL[hh] = sL[hh] * corr + sum;
        sM[hh] = mNew;
      }
    }
    __syncthreads();

    // acc = corr · acc + P · ckv over this warp's 128 columns.
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
      const float c0 = sCorr[mt * 16 + g], c1 = sCorr[mt * 16 + g + 8];
#pragma unroll
      for (int nt = 0; nt < 16; nt++) acc[mt][nt][0] *= c0, acc[mt][nt][1] *= c0, acc[mt][nt][2] *= c1, acc[mt][nt][3] *= c1;
    }
#pragma unroll
    for (int kk = 0; kk < MD_R / 16; kk++) {
      unsigned ph[2][4], pl[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; mt++) {
        const int off = (mt * 16 + (lane & 15)) * MD_PP + kk * 16 + (lane >> 4) * 8;
        tc_ldsm4(ph[mt], sPh + off);
        tc_ldsm4(pl[mt], sPl + off);
      }
#pragma unroll
      for (int np = 0; np < 8; np++) {
        // Matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15) of this k16 × n16 block.
        unsigned b[4];
        const int mi = lane >> 3;
        tc_ldsm4t(b, sT + (kk * 16 + (mi & 1) * 8 + (lane & 7)) * P + warp * 128 + np * 16 + (mi >> 1) * 8);
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
          tc_mma(acc[mt][2 * np], ph[mt], b[0], b[1]);
          tc_mma(acc[mt][2 * np], pl[mt], b[0], b[1]);
          tc_mma(acc[mt][2 * np + 1], ph[mt], b[2], b[3]);
          tc_mma(acc[mt][2 * np + 1], pl[mt], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // this stage, the scores and P are rewritten next tile
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");

  // Partials of the live heads (an empty split writes acc 0, max -inf, sum 0).
#pragma unroll
  for (int mt = 0; mt < 2; mt++)
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
      const int h = h0 + mt * 16 + g + hf * 8;
      if (h >= H) continue;
      float* out = part + (((long long)i * H + h) * S + z) * (MD_L + 2);
#pragma unroll
      for (int nt = 0; nt < 16; nt++) *reinterpret_cast<float2*>(out + warp * 128 + nt * 8 + 2 * t4) = make_float2(acc[mt][nt][2 * hf], acc[mt][nt][2 * hf + 1]);
    }
  if (tid < MD_HB && h0 + tid < H) {
    float* out = part + (((long long)i * H + h0 + tid) * S + z) * (MD_L + 2);
    out[MD_L] = sM[tid];
    out[MD_L + 1] = sL[tid];
  }
}
