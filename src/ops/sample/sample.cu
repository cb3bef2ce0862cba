// Device sampling (contract: sample.ts; host reference: engine/sampler.ts Sampler).
// One block of SR_THREADS threads per row of logits [R, V]:
//   1. penalties on a scratch copy z (sparse token lists), temperature, max / argmax;
//   2. e = f32(exp(z − max)) in double like the host, Σ exp in double (logprobs, top-p target);
//   3. top-k ≤ SR_KMAX: the k best found by a radix search, sorted in shared memory, and the rest
//      done by one thread exactly as the host does it (float64, host order: same bits);
//      otherwise top-k / top-p / min-p and the draw as searches in the host's orders: "rank order" (z desc,
//      index asc: top-k, the nucleus, the top-k draw) through a 4-pass radix descent over an
//      order-preserving 32-bit key, and index order (the plain draw, the nucleus's bins above the
//      cut) through a prefix scan over warp-owned ranges.
// Masses are sums of fixed-point weights floor(e · 2^s) (s = 62 − bits(V), so Σ < 2^62): integer
// sums are exact in any order, so a row's result never depends on thread timing. They differ from
// the host's float64 sums by < V·2^-s relative to a total ≥ 1 (~2e-8 at V = 157184): only a draw
// or cut within that of a boundary can choose differently (sample.gpu.test.ts shows each).
// Arithmetic the host rounds (penalties, temperature, exp argument, u·total) is spelled with _rn
// intrinsics so no FMA contraction changes it.
#include "../cuda-common.cuh"

#define SR_THREADS 1024
#define SR_WARPS (SR_THREADS / 32)
#define SR_P 16                    // doubles of parameters per row (sample.ts SAMPLE_PARAM_WORDS)
#define SR_TOPN 20                 // most top logprobs per row
#define SR_LP (1 + 2 * SR_TOPN)    // doubles of logprob output per row
#define SR_BINS 128                // the host nucleus's bins of 0.5 nat
#define SR_NONE 0x7fffffff
#define SR_KMAX 1024               // top-k up to this: candidates sorted in shared memory

typedef unsigned long long u64;

struct SrShared {
  u64 red[SR_WARPS];
  u64 red2[SR_WARPS];
  double redd[SR_WARPS];
  float redv[SR_WARPS];
  int redi[SR_WARPS];
  u64 total;
  u64 trem;
  unsigned digit;
  int res;
  int cnt;
  int cand[SR_TOPN];
};

// Ascending key = rank order (larger z first); ±0 are one value (the host compares them equal).
__device__ __forceinline__ unsigned rank_key(float f) {
  const unsigned u = f == 0.f ? 0u : __float_as_uint(f);
  const unsigned a = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~a;
}

// The host nucleus bin: (m − z)·2 truncated, the last bin open (−inf lands there).
__device__ __forceinline__ int bin_of(float m, float zi) {
  const double d = __dmul_rn(__dsub_rn((double)m, (double)zi), 2.0);
  return d < (double)(SR_BINS - 1) ? (int)d : SR_BINS - 1;
}

// Which tokens a search counts, and with what weight.
struct Sel {
  const float* z;
  const float* e;
  float m;
  double scale;       // fixed-point scale 2^s
  bool mass;          // weight floor(e·scale), else 1
  bool limited;       // only tokens at or before (lkey, lidx) in rank order
  unsigned lkey;
  int lidx;
  bool filt;          // only e ≥ minp and e ≠ 0 (min-p; the host skips zero weights)
  double minp;
  int binLo, binHi;   // only nucleus bins in [binLo, binHi]
  unsigned pmask;     // only (rank_key & pmask) == pval: a radix prefix (checked before e is read)
  unsigned pval;
};

__device__ __forceinline__ Sel sel_base(const float* z, const float* e, float m, double scale) {
  Sel s;
  s.z = z; s.e = e; s.m = m; s.scale = scale; s.mass = false; s.limited = false; s.lkey = 0; s.lidx = 0;
  s.filt = false; s.minp = 0; s.binLo = 0; s.binHi = SR_BINS - 1; s.pmask = 0; s.pval = 0;
  return s;
}

__device__ __forceinline__ u64 fixed_w(float ei, double scale) { return __double2ull_rz(__dmul_rn((double)ei, scale)); }

__device__ __forceinline__ u64 sel_weight_z(const Sel& s, int i, float zi, unsigned& key) {
  key = rank_key(zi);
  if (s.limited && (key > s.lkey || (key == s.lkey && i > s.lidx))) return 0;
  if ((key & s.pmask) != s.pval) return 0;
  if (s.binLo > 0 || s.binHi < SR_BINS - 1) {
    const int b = bin_of(s.m, zi);
    if (b < s.binLo || b > s.binHi) return 0;
  }
  if (!s.mass && !s.filt) return 1;
  const float ei = s.e[i];
  if (s.filt && !((double)ei >= s.minp && ei != 0.f)) return 0;
  return s.mass ? fixed_w(ei, s.scale) : 1;
}

__device__ __forceinline__ u64 sel_weight(const Sel& s, int i, unsigned& key) { return sel_weight_z(s, i, s.z[i], key); }

// ---- block primitives (blockDim = SR_THREADS; fixed combination order: deterministic) ----------

// Sum over the block through red[SR_WARPS] (SrShared::red for u64, ::redd for double).
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  v = red[threadIdx.x & 31];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ u64 block_sum_u64(u64 v, SrShared& sh) { return block_sum(v, sh.red); }
__device__ __forceinline__ double block_sum_d(double v, SrShared& sh) { return block_sum(v, sh.redd); }

// (value, index) max with the lowest index on ties; every thread gets the result.
__device__ __forceinline__ void block_argmax(float& v, int& i, SrShared& sh) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) { sh.redv[threadIdx.x >> 5] = v; sh.redi[threadIdx.x >> 5] = i; }
  __syncthreads();
  v = sh.redv[threadIdx.x & 31];
  i = sh.redi[threadIdx.x & 31];
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
  }
}

__device__ __forceinline__ u64 sel_total(const Sel& s, int V, SrShared& sh) {
  u64 acc = 0;
  unsigned k;
  #pragma unroll 4
  for (int i = threadIdx.x; i < V; i += SR_THREADS) acc += sel_weight(s, i, k);
  return block_sum_u64(acc, sh);
}

// First token in index order whose cumulative weight reaches T (T clamped to [1, total]); -1 if none.
// Warp w owns a contiguous range read 32 lanes at a time (coalesced); warp totals are scanned in
// warp order, then the one warp holding T walks its range with a lane scan.
__device__ int index_search(const Sel& s, int V, u64 T, SrShared& sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int CW = (V + SR_THREADS - 1) / SR_THREADS * 32;
  const int lo = min(w * CW, V), hi = min(lo + CW, V);
  unsigned k;
  u64 sum = 0;
  #pragma unroll 4
  for (int i = lo + lane; i < hi; i += 32) sum += sel_weight(s, i, k);
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  __syncthreads();
  if (lane == 0) sh.red[w] = sum;
  if (threadIdx.x == 0) sh.res = -1;
  __syncthreads();
  if (w == 0) {
    const u64 t = sh.red[lane];
    u64 x = t;
    for (int o = 1; o < 32; o <<= 1) {
      const u64 y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane >= o) x += y;
    }
    sh.red2[lane] = x - t;
    if (lane == 31) sh.total = x;
  }
  __syncthreads();
  const u64 total = sh.total, excl = sh.red2[w];
  if (total > 0) {
    if (T > total) T = total;
    if (T == 0) T = 1;
    if (excl < T && T <= excl + sum) {  // warp-uniform
      u64 acc = excl;
      for (int i0 = lo; i0 < hi; i0 += 32) {
        const int i = i0 + lane;
        const u64 x = i < hi ? sel_weight(s, i, k) : 0;
        u64 inc = x;
        for (int o = 1; o < 32; o <<= 1) {
          const u64 y = __shfl_up_sync(0xffffffffu, inc, o);
          if (lane >= o) inc += y;
        }
        const unsigned hit = __ballot_sync(0xffffffffu, acc + inc >= T);
        if (hit != 0) {
          if (lane == __ffs(hit) - 1) sh.res = i;
          break;
        }
        acc += __shfl_sync(0xffffffffu, inc, 31);
      }
    }
  }
  __syncthreads();
  const int r = sh.res;
  __syncthreads();
  return r;
}

// First token in rank order whose cumulative weight reaches T (clamped to [1, total]); -1 if none.
// Radix descent over the key, 8 bits a pass, per-warp histograms (integer atomics: exact), then
// the tied tokens of the found key in index order.
__device__ int rank_search(Sel s, int V, u64 T, u64* hw, u64* hist, SrShared& sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  unsigned prefix = 0;
  for (int pass = 0; pass < 4; pass++) {
    const int shift = 24 - 8 * pass;
    for (int j = threadIdx.x; j < SR_WARPS * 256; j += SR_THREADS) hw[j] = 0;
    __syncthreads();
    u64* mine = hw + w * 256;
    s.pmask = pass == 0 ? 0u : 0xffffffffu << (shift + 8);
    s.pval = prefix & s.pmask;
    // A warp's lanes often share a bucket (similar logits share the key's high bits): then one
    // atomic for the warp, else one a lane.
    // Four loads in flight a thread (one SM per row: latency, not bandwidth, is the limit).
    for (int i0 = 0; i0 < V; i0 += 4 * SR_THREADS) {
      float zz[4];
#pragma unroll
      for (int q = 0; q < 4; q++) {
        const int i = i0 + q * SR_THREADS + threadIdx.x;
        zz[q] = i < V ? s.z[i] : 0.f;
      }
#pragma unroll
      for (int q = 0; q < 4; q++) {
        const int i = i0 + q * SR_THREADS + threadIdx.x;
        unsigned key = 0;
        const u64 wt = i < V ? sel_weight_z(s, i, zz[q], key) : 0;
        const unsigned b = wt != 0 ? (key >> shift) & 255u : 256u;
        const unsigned act = __ballot_sync(0xffffffffu, b != 256u);
        if (act == 0) continue;
        const unsigned b0 = __shfl_sync(0xffffffffu, b, __ffs(act) - 1);
        if (__all_sync(0xffffffffu, b == b0 || b == 256u)) {
          u64 t = wt;
          for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
          if (lane == 0) atomicAdd(&mine[b0], t);
        } else if (b != 256u) {
          atomicAdd(&mine[b], wt);
        }
      }
    }
    __syncthreads();
    if (threadIdx.x < 256) {
      u64 t = 0;
      for (int k = 0; k < SR_WARPS; k++) t += hw[k * 256 + threadIdx.x];
      hist[threadIdx.x] = t;
    }
    __syncthreads();
    if (w == 0) {
      u64 s8 = 0;
      for (int b = 0; b < 8; b++) s8 += hist[lane * 8 + b];
      u64 inc = s8;
      for (int o = 1; o < 32; o <<= 1) {
        const u64 y = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += y;
      }
      const u64 tot = __shfl_sync(0xffffffffu, inc, 31);
      u64 t = T < tot ? T : tot;
      if (t == 0) t = 1;
      const unsigned hit = __ballot_sync(0xffffffffu, inc >= t);
      const int f = __ffs(hit) - 1;
      if (hit == 0 && lane == 0) sh.digit = 0xffffffffu;
      if (lane == f) {
        u64 acc = inc - s8;
        for (int b = 0; b < 8; b++) {
          const u64 h = hist[lane * 8 + b];
          if (h > 0 && acc + h >= t) {
            sh.digit = (unsigned)(lane * 8 + b);
            sh.trem = t - acc;
            break;
          }
          acc += h;
        }
      }
    }
    __syncthreads();
    const unsigned d = sh.digit;
    T = sh.trem;
    __syncthreads();
    if (d == 0xffffffffu) return -1;
    prefix |= d << shift;
  }
  s.pmask = 0xffffffffu;
  s.pval = prefix;
  return index_search(s, V, T, sh);
}

// Top-k (k ≤ SR_KMAX) the host's way: the k best (lk, li: the k-th) gathered and sorted best first
// in shared memory (aliasing the histograms), then top-p, min-p and the draw by one thread in the
// host's order and float64 arithmetic. The sorted ids stay at sortedOut[0, k) for logprobs.
__device__ int topk_draw(const float* z, float m, int k, unsigned lk, int li, double topP, double minP, double u, int V,
                         u64* hw, int* sortedOut, SrShared& sh) {
  int* cand = (int*)hw;
  unsigned* ck = (unsigned*)(cand + SR_KMAX);
  double* ex = (double*)(ck + SR_KMAX);
  float* ef = (float*)(ex + SR_KMAX);
  int* sorted = sortedOut;
  if (threadIdx.x == 0) sh.cnt = 0;
  __syncthreads();
  #pragma unroll 4
  for (int i = threadIdx.x; i < V; i += SR_THREADS) {
    const unsigned key = rank_key(z[i]);
    if (key < lk || (key == lk && i <= li)) {
      const int slot = atomicAdd(&sh.cnt, 1);
      if (slot < SR_KMAX) {
        cand[slot] = i;
        ck[slot] = key;
      }
    }
  }
  __syncthreads();
  const int n = min(sh.cnt, k);
  if ((int)threadIdx.x < n) {
    const int c = cand[threadIdx.x];
    const unsigned kc = ck[threadIdx.x];
    int r = 0;
    for (int j = 0; j < n; j++) r += (ck[j] < kc || (ck[j] == kc && cand[j] < c)) ? 1 : 0;
    sorted[r] = c;
  }
  __syncthreads();
  if ((int)threadIdx.x < n) {
    const double x = exp(__dsub_rn((double)z[sorted[threadIdx.x]], (double)m));
    ex[threadIdx.x] = x;
    ef[threadIdx.x] = __double2float_rn(x);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int cnt = n;
    if (topP < 1.0) {
      double mass = 0;
      for (int j = 0; j < n; j++) mass += ex[j];
      const double target = __dmul_rn(topP, mass);
      double cum = 0;
      for (int j = 0; j < n; j++) {
        cum += (double)ef[j];
        if (cum >= target) {
          cnt = j + 1;
          break;
        }
      }
    }
    double total = 0;
    for (int j = 0; j < cnt; j++) {
      const double w = ef[j];
      if (w >= minP) total += w;
    }
    const double uu = __dmul_rn(u, total);
    double cum = 0;
    int last = -1, tok = -1;
    for (int j = 0; j < cnt; j++) {
      const double w = ef[j];
      if (w < minP || w == 0) continue;
      cum += w;
      last = sorted[j];
      if (uu < cum) {
        tok = last;
        break;
      }
    }
    sh.res = tok >= 0 ? tok : last;
  }
  __syncthreads();
  const int r = sh.res;
  __syncthreads();
  return r;
}

__device__ __forceinline__ u64 ceil_frac(double p, u64 w) {
  const double x = __dmul_rn(p, (double)w);
  const u64 t = (u64)ceil(x);
  return t < 1 ? 1 : t;
}

// Error codes in outTok (block-uniform: every thread returns).
__device__ __forceinline__ void fail(int* outTok, int row, int code) {
  if (threadIdx.x == 0) outTok[row] = code;
}

// logits [R, V] (not written); zbuf, ebuf [R, V] scratch; params [R, SR_P]; penTok/penCnt the
// rows' penalty lists; outTok [R] (−1: no finite maximum, −2: NaN in the row, −3: a search found nothing); outLp [R, SR_LP].
// Dynamic shared memory: (SR_WARPS + 1) · 256 · 8 bytes.
extern "C" __global__ void __launch_bounds__(SR_THREADS) sample_rows(
    const float* logits, float* zbuf, float* ebuf, const double* __restrict__ params, const int* __restrict__ penTok,
    const int* __restrict__ penCnt, int* outTok, double* outLp, int V) {
  extern __shared__ u64 sr_dyn[];
  u64* hw = sr_dyn;
  u64* hist = sr_dyn + SR_WARPS * 256;
  __shared__ SrShared sh;
  const int row = blockIdx.x, tid = threadIdx.x;
  const double* P = params + (size_t)row * SR_P;
  const double temp = P[0], topP = P[2], minP = P[3], rep = P[4], pres = P[5], freq = P[6], u = P[7];
  const int topK = (int)P[1], nLp = (int)P[8];
  const int repOff = (int)P[9], repLen = (int)P[10], cntOff = (int)P[11], cntLen = (int)P[12];
  const bool greedy = temp < 1e-5;
  const bool temper = !greedy && temp != 1.0;
  const bool pen = repLen > 0 || cntLen > 0;
  const float* src = logits + (size_t)row * V;
  float* zr = zbuf + (size_t)row * V;
  float* er = ebuf + (size_t)row * V;
  const float* z = (pen || temper) ? zr : src;

  // 1. Penalties (repetition, then frequency/presence: the host's order), temperature, max.
  if (pen) {
    for (int i = tid; i < V; i += SR_THREADS) zr[i] = src[i];
    __syncthreads();
    for (int j = tid; j < repLen; j += SR_THREADS) {
      const int t = penTok[repOff + j];
      if (t >= 0 && t < V) {
        const float v = zr[t];
        zr[t] = v > 0.f ? __double2float_rn(__ddiv_rn((double)v, rep)) : __double2float_rn(__dmul_rn((double)v, rep));
      }
    }
    __syncthreads();
    for (int j = tid; j < cntLen; j += SR_THREADS) {
      const int t = penTok[cntOff + j];
      if (t >= 0 && t < V) {
        const double sub = __dadd_rn(__dmul_rn(freq, (double)penCnt[cntOff + j]), pres);
        zr[t] = __double2float_rn(__dsub_rn((double)zr[t], sub));
      }
    }
    __syncthreads();
  }
  float m = -INFINITY;
  int am = SR_NONE;
  #pragma unroll 4
  for (int i = tid; i < V; i += SR_THREADS) {
    float v = pen ? zr[i] : src[i];
    if (temper) {
      v = __double2float_rn(__ddiv_rn((double)v, temp));
      zr[i] = v;
    }
    if (v > m) {
      m = v;
      am = i;
    }
  }
  block_argmax(m, am, sh);
  if (am == SR_NONE || m == INFINITY) return fail(outTok, row, -1);

  // 2. exp and its sums.
  const int sbits = 62 - (32 - __clz(V));
  const double scale = __longlong_as_double((long long)(1023 + sbits) << 52);
  double sumExp = 0;
  u64 sumW = 0;
  const bool topk = topK > 0 && topK < V;
  const bool exactK = !greedy && topk && topK <= SR_KMAX;
  const bool needE = !greedy && !exactK;  // exact top-k takes exps of its k candidates only
  if (nLp >= 0 || needE) {
    double acc = 0;
    u64 accW = 0;
    #pragma unroll 4
    for (int i = tid; i < V; i += SR_THREADS) {
      const double x = exp(__dsub_rn((double)z[i], (double)m));
      acc += x;
      if (needE) {
        const float ef = __double2float_rn(x);
        er[i] = ef;
        accW += fixed_w(ef, scale);
      }
    }
    sumExp = block_sum_d(acc, sh);
    sumW = block_sum_u64(accW, sh);
    if (!(sumExp >= 1.0)) return fail(outTok, row, -2);
  }
  __syncthreads();

  // 3. Truncation and the draw.
  int token = am;
  int* sortedK = (int*)(hist + 256) - SR_KMAX;  // after the aliased top-k scratch, inside hw
  int nSorted = 0;
  if (exactK) {
    const int kth = rank_search(sel_base(z, er, m, scale), V, (u64)topK, hw, hist, sh);
    if (kth < 0) return fail(outTok, row, -3);
    token = topk_draw(z, m, topK, rank_key(z[kth]), kth, topP, minP, u, V, hw, sortedK, sh);
    if (token < 0) return fail(outTok, row, -3);
    nSorted = topK;
  } else if (!greedy) {
    const Sel base = sel_base(z, er, m, scale);
    bool lim = false;
    unsigned lk = 0;
    int li = 0, B = -1;
    if (topk) {
      const int kth = rank_search(base, V, (u64)topK, hw, hist, sh);
      if (kth < 0) return fail(outTok, row, -3);
      lim = true; lk = rank_key(z[kth]); li = kth;
      if (topP < 1.0) {
        Sel ms = base;
        ms.mass = true; ms.limited = true; ms.lkey = lk; ms.lidx = li;
        const u64 massW = sel_total(ms, V, sh);
        const int last = rank_search(ms, V, ceil_frac(topP, massW), hw, hist, sh);
        if (last < 0) return fail(outTok, row, -3);
        lk = rank_key(z[last]); li = last;
      }
    } else if (topP < 1.0) {
      Sel ms = base;
      ms.mass = true;
      const int last = rank_search(ms, V, ceil_frac(topP, sumW), hw, hist, sh);
      if (last < 0) return fail(outTok, row, -3);
      lim = true; lk = rank_key(z[last]); li = last;
      B = bin_of(m, z[last]);
    }
    Sel d = base;
    d.mass = true; d.filt = true; d.minp = minP; d.limited = lim; d.lkey = lk; d.lidx = li;
    if (B >= 0) {
      // The host's nucleus order: bins above the cut's bin in index order, then that bin best first.
      Sel s1 = d, s2 = d;
      s1.binHi = B - 1;
      s2.binLo = B; s2.binHi = B;
      u64 a1 = 0, a2 = 0;
      unsigned k;
      #pragma unroll 4
      for (int i = tid; i < V; i += SR_THREADS) {
        a1 += sel_weight(s1, i, k);
        a2 += sel_weight(s2, i, k);
      }
      const u64 m1 = block_sum_u64(a1, sh), m2 = block_sum_u64(a2, sh);
      const u64 total = m1 + m2;
      u64 U = __double2ull_rz(__dmul_rn(u, (double)total));
      if (U >= total) U = total - 1;
      token = U < m1 ? index_search(s1, V, U + 1, sh) : rank_search(s2, V, U + 1 - m1, hw, hist, sh);
    } else {
      const u64 total = sel_total(d, V, sh);
      u64 U = __double2ull_rz(__dmul_rn(u, (double)total));
      if (U >= total) U = total - 1;
      token = lim ? rank_search(d, V, U + 1, hw, hist, sh) : index_search(d, V, U + 1, sh);
    }
    if (token < 0) return fail(outTok, row, -3);
  }

  // 4. Logprobs: log_softmax(z) of the token and of the N best, best first.
  if (nLp >= 0) {
    const double lse = __dadd_rn((double)m, log(sumExp));
    double* o = outLp + (size_t)row * SR_LP;
    if (tid == 0) o[0] = __dsub_rn((double)z[token], lse);
    const int N = min(min(nLp, SR_TOPN), V);
    if (N > 0 && nSorted >= N) {
      if (tid < N) {
        o[1 + 2 * tid] = (double)sortedK[tid];
        o[2 + 2 * tid] = __dsub_rn((double)z[sortedK[tid]], lse);
      }
    } else if (N > 0) {
      const int nth = rank_search(sel_base(z, er, m, scale), V, (u64)N, hw, hist, sh);
      if (nth < 0) return fail(outTok, row, -3);
      const unsigned nk = rank_key(z[nth]);
      if (tid == 0) sh.cnt = 0;
      __syncthreads();
      for (int i = tid; i < V; i += SR_THREADS) {
        const unsigned k = rank_key(z[i]);
        if (k < nk || (k == nk && i <= nth)) {
          const int slot = atomicAdd(&sh.cnt, 1);
          if (slot < SR_TOPN) sh.cand[slot] = i;
        }
      }
      __syncthreads();
      if (tid == 0) {
        const int n = min(sh.cnt, N);
        for (int a = 1; a < n; a++) {
          const int x = sh.cand[a];
          const unsigned kx = rank_key(z[x]);
          int b = a - 1;
          while (b >= 0) {
            const unsigned kb = rank_key(z[sh.cand[b]]);
            if (kb < kx || (kb == kx && sh.cand[b] < x)) break;
            sh.cand[b + 1] = sh.cand[b];
            b--;
          }
          sh.cand[b + 1] = x;
        }
        for (int j = 0; j < n; j++) {
          o[1 + 2 * j] = (double)sh.cand[j];
          o[2 + 2 * j] = __dsub_rn((double)z[sh.cand[j]], lse);
        }
      }
    }
  }
  if (tid == 0) outTok[row] = token;
}
