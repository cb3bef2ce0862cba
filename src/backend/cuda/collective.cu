// Tensor-parallel logits: NCCL's all-gather leaves the ranks' [R, w] blocks one after another;
// out [R, W] wants them side by side (rank k at columns k·w), cut to W columns (vocab padding).
extern "C" __global__ void gather_cols_f32(float* out, const float* all, long long R, long long W, long long w) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < R * W; i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / W, c = i % W, k = c / w, j = c % w;
    out[i] = all[(k * R + r) * w + j];
  }
}
