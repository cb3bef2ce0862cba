// out [T,C] = table [V,C] rows ids[t]; one block per token. Ids are checked on the host.
#include "../cuda-common.cuh"

template <typename W>
__device__ void gather(float* out, const W* table, const int* ids, int C) {
  const long long src = (long long)ids[blockIdx.x] * C, dst = (long long)blockIdx.x * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) out[dst + c] = ldw(table, src + c);
}
extern "C" __global__ void embedding_gather_bf16(float* out, const unsigned short* table, const int* ids, int C) { gather(out, table, ids, C); }
extern "C" __global__ void embedding_gather_f32(float* out, const float* table, const int* ids, int C) { gather(out, table, ids, C); }
