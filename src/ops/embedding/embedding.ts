/** embedding contract and reference: out [T,C] = table [V,C] rows ids[t]. */
import { checkShape, fromF64, toF64, type Tensor } from '../../tensor/tensor.js';
import { InvalidRequestError } from '../../util/errors.js';
import type { VocabPiece } from '../../backend/backend.js';

/** Global ids → rows of a vocab piece's table (ids outside the piece → its zero row). */
export function pieceIds(ids: Int32Array, p: VocabPiece): Int32Array {
  return ids.map((id) => (id >= p.start && id < p.start + p.count ? id - p.start : p.zeroRow));
}

export function checkIds(ids: Int32Array, vocab: number): void {
  for (let t = 0; t < ids.length; t++)
    if (ids[t] < 0 || ids[t] >= vocab) throw new InvalidRequestError(`token id ${ids[t]} at position ${t} is outside the vocabulary [0, ${vocab})`, 'input_ids');
}

export function refEmbedding(out: Tensor, table: Tensor, ids: Int32Array, piece?: VocabPiece): void {
  if (piece) ids = pieceIds(ids, piece);
  const [V, C] = table.shape;
  checkShape(out, [ids.length, C], 'embedding out');
  checkIds(ids, V);
  const tab = toF64(table);
  const o = new Float64Array(ids.length * C);
  for (let t = 0; t < ids.length; t++) for (let c = 0; c < C; c++) o[t * C + c] = tab[ids[t] * C + c];
  fromF64(out, o);
}
