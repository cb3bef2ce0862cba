// MLA attention in the absorbed form for both prefill and decode (the same function of the
// inputs; the flash-style expanded prefill comes later). kvB [H·(Dn+Dv), L] f32, per head Dn
// key rows then Dv value rows. rows[s] is the cache row of position s (from the block table).
#include "../cuda-common.cuh"

#define MLA_TILE 32
#define MLA_THREADS 128
#define MLA_MAX_L_PER_THREAD 8  // L ≤ 1024

// cache [rows, L+Dr] rows[i] = [ckv[i] | kpe[i]]; one block per token.
extern "C" __global__ void mla_cachewrite_f32(float* cache, const float* ckv, const float* kpe, const int* rows, int L, int Dr) {
  const int i = blockIdx.x;
  const long long dst = (long long)rows[i] * (L + Dr);
  for (int c = threadIdx.x; c < L + Dr; c += blockDim.x) cache[dst + c] = c < L ? ckv[(long long)i * L + c] : kpe[(long long)i * Dr + c - L];
}

// qlat [n, H, L] = q_nope of each head · W_UK (the head's Dn key rows of kvB); grid (H, n).
extern "C" __global__ void mla_absorbq_f32(float* qlat, const float* q, const float* kvB, int H, int Dn, int Dr, int Dv, int L) {
  const int h = blockIdx.x, i = blockIdx.y;
  const float* qh = q + (long long)i * H * (Dn + Dr) + (long long)h * (Dn + Dr);
  const float* wk = kvB + (long long)h * (Dn + Dv) * L;
  for (int l = threadIdx.x; l < L; l += blockDim.x) {
    float acc = 0.f;
    for (int d = 0; d < Dn; d++) acc += qh[d] * wk[(long long)d * L + l];
    qlat[((long long)i * H + h) * L + l] = acc;
  }
}

// olat [n, H, L] = softmax(scale·(qlat·ckv_s + q_pe·kpe_s)) over s ≤ ctxStart+i, applied to ckv_s.
// Grid (H, n), MLA_THREADS threads; online softmax over tiles of MLA_TILE tokens.
extern "C" __global__ void mla_attend_f32(float* olat, const float* qlat, const float* q, const float* cache, const int* rows, int ctxStart, int H, int Dn, int Dr, int L, float scale) {
  __shared__ float sc[MLA_TILE];
  extern __shared__ float qsh[];  // L + Dr floats: the query in latent space and its rope part
  const int h = blockIdx.x, i = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int Wc = L + Dr;
  const int last = ctxStart + i;
  for (int c = threadIdx.x; c < Wc; c += blockDim.x)
    qsh[c] = c < L ? qlat[((long long)i * H + h) * L + c] : q[(long long)i * H * (Dn + Dr) + (long long)h * (Dn + Dr) + Dn + (c - L)];
  __syncthreads();
  float acc[MLA_MAX_L_PER_THREAD];
#pragma unroll
  for (int r = 0; r < MLA_MAX_L_PER_THREAD; r++) acc[r] = 0.f;
  float m = -INFINITY, sum = 0.f;
  for (int s0 = 0; s0 <= last; s0 += MLA_TILE) {
    for (int ts = warp; ts < MLA_TILE; ts += nwarps) {
      const int s = s0 + ts;
      float d = 0.f;
      if (s <= last) {
        const float* cr = cache + (long long)rows[s] * Wc;
        for (int c = lane; c < Wc; c += 32) d += qsh[c] * cr[c];
        d = warp_sum(d);
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
      const float* cr = cache + (long long)rows[s0 + ts] * Wc;
#pragma unroll
      for (int r = 0; r < MLA_MAX_L_PER_THREAD; r++) {
        const int l = threadIdx.x + r * blockDim.x;
        if (l < L) acc[r] += p * cr[l];
      }
    }
    m = mt;
    __syncthreads();  // sc is rewritten by the next tile
  }
  const float inv = 1.f / sum;
#pragma unroll
  for (int r = 0; r < MLA_MAX_L_PER_THREAD; r++) {
    const int l = threadIdx.x + r * blockDim.x;
    if (l < L) olat[((long long)i * H + h) * L + l] = acc[r] * inv;
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
