// Dummy weights made on the device (`--load-format dummy`): a counter-based hash gives uniform
// values in [center − scale, center + scale], reproducible from the seed.
__device__ __forceinline__ unsigned int mix32(unsigned long long x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
  return (unsigned int)x;
}
__device__ __forceinline__ float uniform(unsigned long long seed, long long i) { return (mix32(seed * 0x9e3779b97f4a7c15ull + (unsigned long long)i) >> 8) * (1.f / 16777216.f) * 2.f - 1.f; }

extern "C" __global__ void fill_uniform_f32(float* p, long long n, unsigned long long seed, float center, float scale) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) p[i] = center + scale * uniform(seed, i);
}
extern "C" __global__ void fill_uniform_bf16(unsigned short* p, long long n, unsigned long long seed, float center, float scale) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const unsigned int u = __float_as_uint(center + scale * uniform(seed, i));
    p[i] = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
}

// dst[i] = src[i] widened (the f32 copy of a dummy bf16 matrix, CudaBackend.loadWeight).
extern "C" __global__ void fill_widen_bf16(float* dst, const unsigned short* src, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) dst[i] = __uint_as_float(((unsigned int)src[i]) << 16);
}
