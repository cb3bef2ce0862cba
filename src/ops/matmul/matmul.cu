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
