// PLACEHOLDER: replaced by the lightning-attention work (cpu).
import type { LightningParams } from '../../backend/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { InternalError } from '../../util/errors.js';
export function cpuLightningPrefill(_o: Tensor, _q: Tensor, _k: Tensor, _v: Tensor, _state: Tensor, _p: LightningParams): void { throw new InternalError('not implemented'); }
export function cpuLightningDecode(_o: Tensor, _q: Tensor, _k: Tensor, _v: Tensor, _states: Tensor, _slots: Int32Array, _p: LightningParams): void { throw new InternalError('not implemented'); }
