// Rotary embedding in place. Angles in double: position · invFreq reaches 1e4+ radians at long
// context, where a float angle would be off by ~1e-3 (the CPU backend works in float64 too).
#include "../cuda-common.cuh"

// x [T, W]; one block per token, threads over (head, pair). gptj: pairs (2i, 2i+1), else NeoX (i, i+R/2).
extern "C" __global__ void rope_rotate_f32(float* x, const int* pos, const double* invFreq, int W, int nHeads, int headStride, int offset, int rotaryDim, int gptj) {
  const int t = blockIdx.x;
  const int half = rotaryDim >> 1;
  const double p = (double)pos[t];
  for (int idx = threadIdx.x; idx < nHeads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    double s, c;
    sincos(p * invFreq[i], &s, &c);
    const long long base = (long long)t * W + (long long)h * headStride + offset;
    const int ia = gptj ? 2 * i : i, ib = gptj ? 2 * i + 1 : i + half;
    const double a = x[base + ia], b = x[base + ib];
    x[base + ia] = (float)(a * c - b * s);
    x[base + ib] = (float)(b * c + a * s);
  }
}
