// PLACEHOLDER: replaced by the MoE work (cpu). cpuMoeExperts composes matmuls through ctx.
import type { RouterParams } from '../../backend/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { InternalError } from '../../util/errors.js';
import type { CpuOpContext } from "../cpu-context.js";
export function cpuMoeRoute(_ids: Tensor, _weights: Tensor, _logits: Tensor, _bias: Tensor | null, _p: RouterParams): void { throw new InternalError('not implemented'); }
export function cpuMoeExperts(_ctx: CpuOpContext, _out: Tensor, _x: Tensor, _ids: Tensor, _weights: Tensor, _w13: Tensor, _w2: Tensor, _ffn: number): void { throw new InternalError('not implemented'); }
