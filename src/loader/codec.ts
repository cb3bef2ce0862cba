/** Element encodings for checkpoint bytes (little-endian, as safetensors stores them). */
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../util/numeric.js';
import { ModelLoadError } from '../util/errors.js';
import type { SafetensorsDtype } from './safetensors.js';

/** Dtypes the writer produces. */
export type WritableDtype = 'F32' | 'BF16' | 'F16' | 'I32';

/** Encode numbers as dtype bytes; BF16/F16 round to nearest even. I32 values must be integers. */
export function encodeTensor(dtype: WritableDtype, values: ArrayLike<number>): Uint8Array {
  const n = values.length;
  switch (dtype) {
    case 'F32':
      return new Uint8Array(Float32Array.from(values).buffer);
    case 'I32': {
      const a = new Int32Array(n);
      for (let i = 0; i < n; i++) a[i] = values[i];
      return new Uint8Array(a.buffer);
    }
    case 'BF16':
    case 'F16': {
      const conv = dtype === 'BF16' ? f32ToBf16 : f32ToF16;
      const a = new Uint16Array(n);
      for (let i = 0; i < n; i++) a[i] = conv(values[i]);
      return new Uint8Array(a.buffer);
    }
  }
}

/** Decode F32/BF16/F16 bytes to f32 (copies, so the input's alignment does not matter). */
export function decodeTensor(dtype: SafetensorsDtype, bytes: Uint8Array): Float32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32': {
      const out = new Float32Array(bytes.byteLength / 4);
      for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(4 * i, true);
      return out;
    }
    case 'BF16':
    case 'F16': {
      const conv = dtype === 'BF16' ? bf16ToF32 : f16ToF32;
      const out = new Float32Array(bytes.byteLength / 2);
      for (let i = 0; i < out.length; i++) out[i] = conv(dv.getUint16(2 * i, true));
      return out;
    }
    default:
      throw new ModelLoadError(`cannot decode ${dtype} as floats (expected F32, BF16 or F16)`);
  }
}
