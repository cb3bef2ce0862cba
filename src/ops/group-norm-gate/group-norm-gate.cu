// Gated group RMSNorm: one block per (group, token); out = x·rsqrt(mean_group(x²)+eps)·w·sigmoid(gate).
#include "../cuda-common.cuh"

extern "C" __global__ void group_norm_gate_f32(float* out, const float* x, const float* gate, const float* w, int C, int G, float eps) {
  __shared__ float sh[32];
  const long long base = (long long)blockIdx.y * C + (long long)blockIdx.x * G;
  const int wb = blockIdx.x * G;
  float ss = 0.f;
  for (int c = threadIdx.x; c < G; c += blockDim.x) {
    const float v = x[base + c];
    ss += v * v;
  }
  ss = block_sum(ss, sh);
  const float inv = 1.f / sqrtf(ss / (float)G + eps);
  for (int c = threadIdx.x; c < G; c += blockDim.x) out[base + c] = x[base + c] * inv * w[wb + c] * sigmoidf_(gate[base + c]);
}
