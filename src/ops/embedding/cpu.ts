import { checkShape, f32Data, hostView, type Tensor } from '../../tensor/tensor.js';
import type { VocabPiece } from '../../backend/backend.js';
import { checkIds, pieceIds } from './embedding.js';

export function cpuEmbedding(out: Tensor, table: Tensor, ids: Int32Array, piece?: VocabPiece): void {
  if (piece) ids = pieceIds(ids, piece);
  const [V, C] = table.shape;
  checkShape(out, [ids.length, C], 'embedding out');
  checkIds(ids, V);
  const o = f32Data(out);
  const tv = hostView(table);
  if (table.dtype === 'bf16') {
    const src = tv.data as Uint16Array;
    const dst = new Uint32Array(o.data.buffer, o.data.byteOffset);
    for (let t = 0; t < ids.length; t++) {
      const s = tv.off + ids[t] * C;
      const d = o.off + t * C;
      for (let c = 0; c < C; c++) dst[d + c] = src[s + c] << 16;
    }
  } else {
    const src = tv.data as Float32Array;
    for (let t = 0; t < ids.length; t++) o.data.set(src.subarray(tv.off + ids[t] * C, tv.off + (ids[t] + 1) * C), o.off + t * C);
  }
}
