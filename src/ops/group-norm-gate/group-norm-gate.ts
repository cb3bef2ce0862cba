// PLACEHOLDER: replaced by the lightning-attention work (reference).
import type { Tensor } from '../../tensor/tensor.js';
import { InternalError } from '../../util/errors.js';
export function refGroupRmsnormGate(_out: Tensor, _x: Tensor, _gate: Tensor, _w: Tensor, _groups: number, _eps: number): void { throw new InternalError('not implemented'); }
