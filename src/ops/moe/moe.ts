// PLACEHOLDER: replaced by the MoE work (reference).
import type { RouterParams } from '../../backend/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { InternalError } from '../../util/errors.js';
export function refMoeRoute(_ids: Tensor, _weights: Tensor, _logits: Tensor, _bias: Tensor | null, _p: RouterParams): void { throw new InternalError('not implemented'); }
export function refMoeExperts(_out: Tensor, _x: Tensor, _ids: Tensor, _weights: Tensor, _w13: Tensor, _w2: Tensor, _ffn: number): void { throw new InternalError('not implemented'); }
