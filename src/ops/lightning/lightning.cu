// Lightning attention, the plain recurrence (a correct base; the chunked tensor-core prefill and a
// fused multi-layer decode come later). Thread j owns value column j of the head's state
// S [D_k, D_v]: S[:, j] ← λ·S[:, j] + k·v_j ;  o_j = scale · q·S[:, j].
#include "../cuda-common.cuh"

// One block per head, D threads, tokens in order. Dynamic shared memory: S (D·D), q, k (D each),
// and with the vLLM quirk the state at the block start Sb (D·D). quirkBlock = 0: canonical.
// vLLM quirk: o_t = scale·q·(S_t + (λ^tl − λ^(tl+1))·S_b), tl = t mod quirkBlock (inter term
// decayed by λ^tl instead of λ^(tl+1)); the state itself is the canonical one.
// flags (both prefill kernels): LP_STATE_BF16 the stored state rounded to bf16 values;
// LP_BF16_OPS q, k and v rounded to bf16 as they are read (MatmulInputs 'bf16').
#define LP_STATE_BF16 1
#define LP_BF16_OPS 2
extern "C" __global__ void lightning_prefill_f32(float* o, const float* q, const float* k, const float* v, float* state, const double* decay, float scale, int n, int H, int D, int quirkBlock, int flags) {
  const bool rq = flags & LP_BF16_OPS;
  extern __shared__ float sm[];
  float* S = sm;
  float* qs = S + D * D;
  float* ks = qs + D;
  float* Sb = ks + D;
  const int h = blockIdx.x, j = threadIdx.x;
  const long long W = (long long)H * D;
  const double s = decay[h];
  const float lam = (float)exp(-s);
  float* st = state + (long long)h * D * D;
  for (int i = 0; i < D; i++) S[i * D + j] = st[i * D + j];
  for (int t = 0; t < n; t++) {
    const long long base = t * W + (long long)h * D;
    const int tl = quirkBlock > 0 ? t % quirkBlock : 0;
    if (quirkBlock > 0 && tl == 0)
      for (int i = 0; i < D; i++) Sb[i * D + j] = S[i * D + j];
    qs[j] = rq ? round_bf(q[base + j]) : q[base + j];
    ks[j] = rq ? round_bf(k[base + j]) : k[base + j];
    const float vj = rq ? round_bf(v[base + j]) : v[base + j];
    __syncthreads();
    float acc = 0.f;
    for (int i = 0; i < D; i++) {
      const float sn = lam * S[i * D + j] + ks[i] * vj;
      S[i * D + j] = sn;
      acc += qs[i] * sn;
    }
    if (quirkBlock > 0) {
      const float c = (float)(exp(-s * tl) - exp(-s * (tl + 1)));
      float a2 = 0.f;
      for (int i = 0; i < D; i++) a2 += qs[i] * Sb[i * D + j];
      acc += c * a2;
    }
    __syncthreads();  // every thread is done with qs/ks (and o may alias q, k or v)
    o[base + j] = scale * acc;
  }
  for (int i = 0; i < D; i++) st[i * D + j] = (flags & LP_STATE_BF16) ? round_bf(S[i * D + j]) : S[i * D + j];
}

// One token for each of B sequences: grid (H, B), D·R threads (R row groups: thread (j, r) owns
// rows i ≡ r mod R of value column j, so a 2 MiB state is read by 32·B blocks of up to 1024
// threads instead of D). states [slots, H, D, D], row b uses slot slots[b]. The output uses the
// unrounded new state; only the stored copy is rounded. Dynamic smem: q, k (D each), R·D partials.
extern "C" __global__ void lightning_decode_f32(float* o, const float* q, const float* k, const float* v, float* states, const int* slots, const double* decay, float scale, int H, int D, int R, int stateBf16) {
  extern __shared__ float sm[];
  float* qs = sm;
  float* ks = sm + D;
  float* part = sm + 2 * D;
  const int h = blockIdx.x, b = blockIdx.y;
  const int j = threadIdx.x % D, r = threadIdx.x / D;
  const long long base = (long long)b * H * D + (long long)h * D;
  if (r == 0) {
    qs[j] = q[base + j];
    ks[j] = k[base + j];
  }
  __syncthreads();
  const float vj = v[base + j];
  const float lam = (float)exp(-decay[h]);
  float* S = states + ((long long)slots[b] * H + h) * D * D;
  float acc = 0.f;
  for (int i = r; i < D; i += R) {
    const float sn = lam * S[i * D + j] + ks[i] * vj;
    acc += qs[i] * sn;
    S[i * D + j] = stateBf16 ? round_bf(sn) : sn;
  }
  part[r * D + j] = acc;
  __syncthreads();
  if (r == 0) {
    float sum = 0.f;
    for (int g = 0; g < R; g++) sum += part[g * D + j];  // fixed order: deterministic
    o[base + j] = scale * sum;
  }
}

// Prefill for D = 128, canonical semantics: grid (H, 4), one warp per block owning 32 value
// columns, each lane's column S[:, j] in registers (128 floats) instead of shared memory, so a
// token is 256 register FMAs with q, k broadcast from shared memory and no block barrier; 4·H warps
// run in parallel instead of H blocks. o must not alias q, k or v (blocks of a head share them).
extern "C" __global__ void __launch_bounds__(32) lightning_prefill_d128_f32(float* __restrict__ o, const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, float* state, const double* decay, float scale, int n, int H, int flags) {
  constexpr int D = 128;
  const bool rq = flags & LP_BF16_OPS;
  __shared__ float qs[2][D], ks[2][D];
  const int h = blockIdx.x, lane = threadIdx.x, j = blockIdx.y * 32 + lane;
  const long long W = (long long)H * D;
  const float lam = (float)exp(-decay[h]);
  float* st = state + (long long)h * D * D;
  float S[D];
#pragma unroll
  for (int i = 0; i < D; i++) S[i] = st[i * D + j];
  // Double-buffered q/k rows: token t + 1 is loaded while token t is computed.
  auto load = [&](int t, int b) {
    const long long base = t * W + (long long)h * D;
#pragma unroll
    for (int m = 0; m < 4; m++) {
      const float qv = q[base + lane + 32 * m], kv = k[base + lane + 32 * m];
      qs[b][lane + 32 * m] = rq ? round_bf(qv) : qv;
      ks[b][lane + 32 * m] = rq ? round_bf(kv) : kv;
    }
  };
  if (n > 0) load(0, 0);
  __syncwarp();
  for (int t = 0; t < n; t++) {
    const int b = t & 1;
    const long long base = t * W + (long long)h * D;
    const float vj = rq ? round_bf(v[base + j]) : v[base + j];
    if (t + 1 < n) load(t + 1, b ^ 1);
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < D; i++) {
      S[i] = lam * S[i] + ks[b][i] * vj;
      acc += qs[b][i] * S[i];
    }
    o[base + j] = scale * acc;
    __syncwarp();  // buffer b is reloaded at t + 1
  }
#pragma unroll
  for (int i = 0; i < D; i++) st[i * D + j] = (flags & LP_STATE_BF16) ? round_bf(S[i]) : S[i];
}
