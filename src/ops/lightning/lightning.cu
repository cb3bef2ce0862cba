// Lightning attention, the plain recurrence (a correct base; the chunked tensor-core prefill and a
// fused multi-layer decode come later). Thread j owns value column j of the head's state
// S [D_k, D_v]: S[:, j] ← λ·S[:, j] + k·v_j ;  o_j = scale · q·S[:, j].
#include "../cuda-common.cuh"

// One block per head, D threads, tokens in order. Dynamic shared memory: S (D·D), q, k (D each),
// and with the vLLM quirk the state at the block start Sb (D·D). quirkBlock = 0: canonical.
// vLLM quirk: o_t = scale·q·(S_t + (λ^tl − λ^(tl+1))·S_b), tl = t mod quirkBlock (inter term
// decayed by λ^tl instead of λ^(tl+1)); the state itself is the canonical one.
extern "C" __global__ void lightning_prefill_f32(float* o, const float* q, const float* k, const float* v, float* state, const double* decay, float scale, int n, int H, int D, int quirkBlock, int stateBf16) {
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
    qs[j] = q[base + j];
    ks[j] = k[base + j];
    const float vj = v[base + j];
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
  for (int i = 0; i < D; i++) st[i * D + j] = stateBf16 ? round_bf(S[i * D + j]) : S[i * D + j];
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
