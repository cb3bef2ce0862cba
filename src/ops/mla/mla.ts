// PLACEHOLDER: replaced by the MLA work (reference).
import type { MlaParams, MlaSeq } from '../../backend/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { InternalError } from '../../util/errors.js';
export function refMlaCacheWrite(_cache: Tensor, _ckv: Tensor, _kpe: Tensor, _seq: MlaSeq, _p: MlaParams): void { throw new InternalError('not implemented'); }
export function refMlaPrefillExpanded(_out: Tensor, _q: Tensor, _cache: Tensor, _kvB: Tensor, _seq: MlaSeq, _p: MlaParams): void { throw new InternalError('not implemented'); }
export function refMlaDecodeAbsorbed(_out: Tensor, _q: Tensor, _cache: Tensor, _kvB: Tensor, _seq: MlaSeq, _p: MlaParams): void { throw new InternalError('not implemented'); }
