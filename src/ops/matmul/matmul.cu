// matmul helpers: a warp-per-output-row GEMV for small T (decode: reads each weight row once,
// fp32 accumulation, f32 activations exactly as the CPU backend sees them) and the pieces around
// the cuBLASLt path for larger T (activations cast to bf16, bias added after the GEMM).
#include "../cuda-common.cuh"

template <typename W>
__device__ void gemv(float* out, const float* x, const W* w, const float* bias, int T, int N, int K) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (n >= N) return;
  const W* wr = w + (long long)n * K;
  const float b = bias ? bias[n] : 0.f;
  for (int t = 0; t < T; t++) {
    const float d = warp_dot(wr, x + (long long)t * K, K, lane);
    if (lane == 0) out[(long long)t * N + n] = d + b;
  }
}

// out [T,N] = x [T,K] · w [N,K]ᵀ (+ bias [N] or null); grid ceil(N / warps per block).
extern "C" __global__ void matmul_gemv_bf16(float* out, const float* x, const unsigned short* w, const float* bias, int T, int N, int K) {
  gemv(out, x, w, bias, T, N, K);
}
extern "C" __global__ void matmul_gemv_f32(float* out, const float* x, const float* w, const float* bias, int T, int N, int K) {
  gemv(out, x, w, bias, T, N, K);
}

// out [n] = x [n] rounded to bf16 values, kept in f32 (MatmulInputs 'bf16' ahead of the GEMV and
// f32-weight paths, and of the experts' down projections); out may be x.
extern "C" __global__ void matmul_round_f32(float* out, const float* x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) out[i] = round_bf(x[i]);
}

// out [n] bf16 = x [n] f32 (cuBLASLt wants both operands in the weight dtype).
extern "C" __global__ void matmul_castx_bf16(unsigned short* out, const float* x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) out[i] = f2bf(x[i]);
}

// x = hi + lo with both halves bf16 (~16 significant bits): two bf16 GEMMs then give an f32-faithful
// product on the tensor cores (relative error ~2^-16 instead of bf16's 2^-8).
extern "C" __global__ void matmul_castsplit_bf16(unsigned short* hi, unsigned short* lo, const float* x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const unsigned short h = f2bf(x[i]);
    hi[i] = h;
    lo[i] = f2bf(x[i] - bf2f(h));
  }
}

// out [T,N] += bias [N].
extern "C" __global__ void matmul_bias_f32(float* out, const float* bias, long long T, int N) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < T * N; i += (long long)gridDim.x * blockDim.x) out[i] += bias[i % N];
}

// ---- Decode GEMV v2: every 16-byte weight load feeds all T ≤ 8 activation rows (weights read once
// per step, not once per row), four loads in flight per lane before any FMA, and `wpr` warps
// splitting K for narrow outputs (the router's 256 rows would otherwise leave most SMs idle).
// Block: 256 threads = 8 warps = 8 / wpr output rows. Needs K % (16 / sizeof(W)) == 0 and 16-byte
// aligned w and x rows (checked on the host, the v1 kernel above takes the rest).
__device__ __forceinline__ void unpack16(const uint4 u, float (&f)[8]) {
  f[0] = bf_lo(u.x); f[1] = bf_hi(u.x); f[2] = bf_lo(u.y); f[3] = bf_hi(u.y);
  f[4] = bf_lo(u.z); f[5] = bf_hi(u.z); f[6] = bf_lo(u.w); f[7] = bf_hi(u.w);
}
__device__ __forceinline__ void unpack16(const uint4 u, float (&f)[4]) {
  f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y); f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
}

// rx (MatmulInputs 'bf16'): x rounded to bf16 as it is read, instead of a rounded copy first.
template <int V, int T>
__device__ __forceinline__ void fma16(float (&acc)[T], const uint4 u, const float* __restrict__ x, long long col, int K, bool rx) {
  float wf[V];
  unpack16(u, wf);
#pragma unroll
  for (int t = 0; t < T; t++) {
    const float4* xp = (const float4*)(x + (long long)t * K + col);
#pragma unroll
    for (int j = 0; j < V / 4; j++) {
      float4 a = xp[j];
      if (rx) a = make_float4(round_bf(a.x), round_bf(a.y), round_bf(a.z), round_bf(a.w));
      acc[t] += wf[4 * j] * a.x + wf[4 * j + 1] * a.y + wf[4 * j + 2] * a.z + wf[4 * j + 3] * a.w;
    }
  }
}

template <typename W, int T>
__device__ void gemv2(float* __restrict__ out, const float* __restrict__ x, const W* __restrict__ w, const float* __restrict__ bias, int N, int K, int wpr, int rx) {
  constexpr int V = 16 / sizeof(W);
  __shared__ float red[8][T];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = blockIdx.x * (8 / wpr) + warp / wpr, sub = warp % wpr;
  float acc[T];
#pragma unroll
  for (int t = 0; t < T; t++) acc[t] = 0.f;
  if (n < N) {
    const uint4* wr = (const uint4*)(w + (long long)n * K);
    const int nv = K / V, stride = 32 * wpr;
    int c = sub * 32 + lane;
    for (; c + 3 * stride < nv; c += 4 * stride) {
      uint4 u[4];
#pragma unroll
      for (int j = 0; j < 4; j++) u[j] = wr[c + j * stride];
#pragma unroll
      for (int j = 0; j < 4; j++) fma16<V, T>(acc, u[j], x, (long long)(c + j * stride) * V, K, rx);
    }
    for (; c < nv; c += stride) fma16<V, T>(acc, wr[c], x, (long long)c * V, K, rx);
  }
#pragma unroll
  for (int t = 0; t < T; t++) acc[t] = warp_sum(acc[t]);
  if (wpr > 1) {
    // Partials of the wpr warps of a row, summed in warp order (deterministic).
    if (lane == 0)
#pragma unroll
      for (int t = 0; t < T; t++) red[warp][t] = acc[t];
    __syncthreads();
    if (sub != 0) return;
#pragma unroll
    for (int t = 0; t < T; t++) {
      float s = 0.f;
      for (int j = 0; j < wpr; j++) s += red[warp + j][t];
      acc[t] = s;
    }
  }
  if (lane == 0 && n < N) {
    const float b = bias ? bias[n] : 0.f;
#pragma unroll
    for (int t = 0; t < T; t++) out[(long long)t * N + n] = acc[t] + b;
  }
}

#define GEMV2(T)                                                                                                                     \
  extern "C" __global__ void __launch_bounds__(256) matmul_gemv2_bf16_t##T(float* out, const float* x, const unsigned short* w, const float* bias, int N, int K, int wpr, int rx) { \
    gemv2<unsigned short, T>(out, x, w, bias, N, K, wpr, rx);                                                                            \
  }                                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(256) matmul_gemv2_f32_t##T(float* out, const float* x, const float* w, const float* bias, int N, int K, int wpr, int rx) { \
    gemv2<float, T>(out, x, w, bias, N, K, wpr, rx);                                                                                     \
  }
GEMV2(1)
GEMV2(2)
GEMV2(3)
GEMV2(4)
GEMV2(5)
GEMV2(6)
GEMV2(7)
GEMV2(8)
