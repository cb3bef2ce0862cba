// MLA attention in the absorbed form: decode, and prefill in the absorbed mode (the same function of the
// inputs; the tensor-core expanded prefill is mla-flash.cu). kvB [H·(Dn+Dv), L] f32, per head Dn
// key rows then Dv value rows. rows[s] is the cache row of position s (from the block table).
#include "../cuda-common.cuh"

#define MLA_TILE 32
#define MLA_THREADS 128
#define MLA_MAX_L_PER_THREAD 8  // L ≤ 1024

// Kernels that touch the latent cache come in two forms named by the cache's element type:
// _f32 and _bf16 (the bf16 cache: values stored rounded to nearest even, widened exactly on reads).
__device__ __forceinline__ void stc(float* p, long long i, float x) { p[i] = x; }
__device__ __forceinline__ void stc(unsigned short* p, long long i, float x) { p[i] = f2bf(x); }

// cache [rows, L+Dr] rows[i] = [ckv[i] | kpe[i]]; one block per token.
template <typename C>
__device__ void cachewrite(C* cache, const float* ckv, const float* kpe, const int* rows, int L, int Dr) {
  const int i = blockIdx.x;
  const long long dst = (long long)rows[i] * (L + Dr);
  for (int c = threadIdx.x; c < L + Dr; c += blockDim.x) stc(cache, dst + c, c < L ? ckv[(long long)i * L + c] : kpe[(long long)i * Dr + c - L]);
}
extern "C" __global__ void mla_cachewrite_f32(float* cache, const float* ckv, const float* kpe, const int* rows, int L, int Dr) { cachewrite(cache, ckv, kpe, rows, L, Dr); }
extern "C" __global__ void mla_cachewrite_bf16(unsigned short* cache, const float* ckv, const float* kpe, const int* rows, int L, int Dr) { cachewrite(cache, ckv, kpe, rows, L, Dr); }

// qlat [n, H, L] = q_nope of each head · W_UK (the head's Dn key rows of kvB); grid (H, n, Z): block
// z takes columns z·blockDim.x.. in steps of Z·blockDim.x (Z = ceil(L / blockDim.x): one column a
// thread). _bf16 reads the bf16 twin of kvB (the same values, half the bytes).
template <typename W>
__device__ void absorbq(float* qlat, const float* q, const W* kvB, int H, int Dn, int Dr, int Dv, int L) {
  const int h = blockIdx.x, i = blockIdx.y;
  const float* qh = q + (long long)i * H * (Dn + Dr) + (long long)h * (Dn + Dr);
  const W* wk = kvB + (long long)h * (Dn + Dv) * L;
  for (int l = blockIdx.z * blockDim.x + threadIdx.x; l < L; l += blockDim.x * gridDim.z) {
    float acc = 0.f;
    for (int d = 0; d < Dn; d++) acc += qh[d] * ldw(wk, (long long)d * L + l);
    qlat[((long long)i * H + h) * L + l] = acc;
  }
}
extern "C" __global__ void mla_absorbq_f32(float* qlat, const float* q, const float* kvB, int H, int Dn, int Dr, int Dv, int L) { absorbq(qlat, q, kvB, H, Dn, Dr, Dv, L); }
extern "C" __global__ void mla_absorbq_bf16(float* qlat, const float* q, const unsigned short* kvB, int H, int Dn, int Dr, int Dv, int L) { absorbq(qlat, q, kvB, H, Dn, Dr, Dv, L); }

// Cache row of context position s: from an explicit list, or from a block table (paged; the
// decode graph's form, whose arguments do not grow with the context).
struct RowList {
  const int* rows;
  __device__ long long operator()(int s) const { return rows[s]; }
};
struct RowPaged {
  const int* bt;
  int bs;
  __device__ long long operator()(int s) const { return (long long)bt[s / bs] * bs + s % bs; }
};

// One warp's share of qsh · cache row (Wc values); the caller sums over the warp.
__device__ __forceinline__ float row_dot(const float* qsh, const float* cr, int Wc, int lane) {
  float d = 0.f;
  for (int c = lane; c < Wc; c += 32) d += qsh[c] * cr[c];
  return d;
}
__device__ __forceinline__ float row_dot(const float* qsh, const unsigned short* cr, int Wc, int lane) {
  float d = 0.f;
  if ((Wc & 1) == 0) {
    // Even width: every row starts 4-byte aligned, read bf16 pairs (qsh is 8-byte aligned shared memory).
    const unsigned* c2 = reinterpret_cast<const unsigned*>(cr);
    const float2* q2 = reinterpret_cast<const float2*>(qsh);
    for (int c = lane; c < Wc / 2; c += 32) {
      const unsigned u = c2[c];
      const float2 qq = q2[c];
      d += qq.x * bf_lo(u) + qq.y * bf_hi(u);
    }
  } else
    for (int c = lane; c < Wc; c += 32) d += qsh[c] * bf2f(cr[c]);
  return d;
}

// Split-context attention (flash-decoding): grid (H, n, S); split z covers tokens
// [z·splitLen, (z+1)·splitLen) ∩ [0, ctxStart+i]. Each writes its unnormalised partial
// part[((i·H + h)·S + z)·(L+2)] = [acc (L) | max | sum]; mla_combine_f32 merges the splits.
// scores = scale·(qlat·ckv_s + q_pe·kpe_s); MLA_THREADS threads; online softmax over tiles.
template <typename C, typename Row>
__device__ void attend(float* part, const float* qlat, const float* q, const C* cache, Row row, int ctxStart, int H, int Dn, int Dr, int L, float scale, int splitLen) {
  __shared__ float sc[MLA_TILE];
  extern __shared__ __align__(16) float qsh[];  // L + Dr floats: the query in latent space and its rope part
  const int h = blockIdx.x, i = blockIdx.y, z = blockIdx.z, S = gridDim.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int Wc = L + Dr;
  const int from = z * splitLen;
  const int last = min(ctxStart + i, from + splitLen - 1);
  for (int c = threadIdx.x; c < Wc; c += blockDim.x)
    qsh[c] = c < L ? qlat[((long long)i * H + h) * L + c] : q[(long long)i * H * (Dn + Dr) + (long long)h * (Dn + Dr) + Dn + (c - L)];
  __syncthreads();
  float acc[MLA_MAX_L_PER_THREAD];
#pragma unroll
  for (int r = 0; r < MLA_MAX_L_PER_THREAD; r++) acc[r] = 0.f;
  float m = -INFINITY, sum = 0.f;
  for (int s0 = from; s0 <= last; s0 += MLA_TILE) {
    for (int ts = warp; ts < MLA_TILE; ts += nwarps) {
      const int s = s0 + ts;
      float d = 0.f;
      if (s <= last) {
        d = warp_sum(row_dot(qsh, cache + row(s) * Wc, Wc, lane));
      }
      if (lane == 0) sc[ts] = s <= last ? d * scale : -INFINITY;
    }
    __syncthreads();
    float mt = m;
    for (int ts = 0; ts < MLA_TILE; ts++) mt = fmaxf(mt, sc[ts]);
    const float corr = expf(m - mt);  // m = -inf on the first tile: corr = 0
    sum *= corr;
#pragma unroll
    for (int r = 0; r < MLA_MAX_L_PER_THREAD; r++) acc[r] *= corr;
    for (int ts = 0; ts < MLA_TILE && s0 + ts <= last; ts++) {
      const float p = expf(sc[ts] - mt);
      sum += p;
      const C* cr = cache + row(s0 + ts) * Wc;
#pragma unroll
      for (int r = 0; r < MLA_MAX_L_PER_THREAD; r++) {
        const int l = threadIdx.x + r * blockDim.x;
        if (l < L) acc[r] += p * ldw(cr, l);
      }
    }
    m = mt;
    __syncthreads();  // sc is rewritten by the next tile
  }
  float* out = part + (((long long)i * H + h) * S + z) * (L + 2);
#pragma unroll
  for (int r = 0; r < MLA_MAX_L_PER_THREAD; r++) {
    const int l = threadIdx.x + r * blockDim.x;
    if (l < L) out[l] = acc[r];
  }
  if (threadIdx.x == 0) {
    out[L] = m;  // -inf for an empty split
    out[L + 1] = sum;
  }
}

// Paged form: meta = [ctxStart, block table...]; the split length follows the context read from
// device memory, so one captured launch (fixed S = gridDim.z) serves every context length.
template <typename C>
__device__ void attend_paged(float* part, const float* qlat, const float* q, const C* cache, const int* meta, int H, int Dn, int Dr, int L, float scale, int bs) {
  const int ctxStart = meta[0];
  const int per = (ctxStart + (int)gridDim.y + (int)gridDim.z - 1) / (int)gridDim.z;
  const int splitLen = (per + MLA_TILE - 1) / MLA_TILE * MLA_TILE;  // whole tiles; trailing splits may be empty
  attend(part, qlat, q, cache, RowPaged{meta + 1, bs}, ctxStart, H, Dn, Dr, L, scale, splitLen);
}

extern "C" __global__ void mla_attend_f32(float* part, const float* qlat, const float* q, const float* cache, const int* rows, int ctxStart, int H, int Dn, int Dr, int L, float scale, int splitLen) {
  attend(part, qlat, q, cache, RowList{rows}, ctxStart, H, Dn, Dr, L, scale, splitLen);
}
extern "C" __global__ void mla_attend_bf16(float* part, const float* qlat, const float* q, const unsigned short* cache, const int* rows, int ctxStart, int H, int Dn, int Dr, int L, float scale, int splitLen) {
  attend(part, qlat, q, cache, RowList{rows}, ctxStart, H, Dn, Dr, L, scale, splitLen);
}
extern "C" __global__ void mla_attend_paged_f32(float* part, const float* qlat, const float* q, const float* cache, const int* meta, int H, int Dn, int Dr, int L, float scale, int bs) {
  attend_paged(part, qlat, q, cache, meta, H, Dn, Dr, L, scale, bs);
}
extern "C" __global__ void mla_attend_paged_bf16(float* part, const float* qlat, const float* q, const unsigned short* cache, const int* meta, int H, int Dn, int Dr, int L, float scale, int bs) {
  attend_paged(part, qlat, q, cache, meta, H, Dn, Dr, L, scale, bs);
}

// olat [n, H, L] = Σ_z e^(m_z − M)·acc_z / Σ_z e^(m_z − M)·sum_z; grid (H, n, Z), columns as
// absorbq's. Split 0 is never empty (splitLen ≥ 1 and position 0 is always visible), so M is finite.
extern "C" __global__ void mla_combine_f32(float* olat, const float* part, int H, int L, int S) {
  const int h = blockIdx.x, i = blockIdx.y;
  const float* p = part + ((long long)i * H + h) * S * (L + 2);
  float M = -INFINITY;
  for (int z = 0; z < S; z++) M = fmaxf(M, p[z * (L + 2) + L]);
  float den = 0.f;
  for (int z = 0; z < S; z++) den += expf(p[z * (L + 2) + L] - M) * p[z * (L + 2) + L + 1];
  const float inv = 1.f / den;
  for (int l = blockIdx.z * blockDim.x + threadIdx.x; l < L; l += blockDim.x * gridDim.z) {
    float a = 0.f;
    for (int z = 0; z < S; z++) a += expf(p[z * (L + 2) + L] - M) * p[z * (L + 2) + l];
    olat[((long long)i * H + h) * L + l] = a * inv;
  }
}

// out [n, H·Dv] = per head W_UV (the head's Dv value rows of kvB) · olat; a warp per output.
extern "C" __global__ void mla_outproj_f32(float* out, const float* olat, const float* kvB, int n, int H, int Dn, int Dv, int L) {
  const int lane = threadIdx.x & 31;
  const long long idx = blockIdx.x * (long long)(blockDim.x >> 5) + (threadIdx.x >> 5);
  if (idx >= (long long)n * H * Dv) return;
  const int j = (int)(idx % Dv);
  const int h = (int)((idx / Dv) % H);
  const long long i = idx / ((long long)Dv * H);
  const float d = warp_dot(kvB + ((long long)h * (Dn + Dv) + Dn + j) * L, olat + (i * H + h) * L, L, lane);
  if (lane == 0) out[idx] = d;
}
