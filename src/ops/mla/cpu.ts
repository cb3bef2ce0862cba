// PLACEHOLDER: replaced by the MLA work (cpu).
import type { MlaParams, MlaSeq } from '../../backend/backend.js';
import type { CpuOpContext } from "../cpu-context.js";
import type { Tensor } from '../../tensor/tensor.js';
import { InternalError } from '../../util/errors.js';
export function cpuMlaCacheWrite(_cache: Tensor, _ckv: Tensor, _kpe: Tensor, _seq: MlaSeq, _p: MlaParams): void { throw new InternalError('not implemented'); }
export function cpuMlaPrefillExpanded(_ctx: CpuOpContext, _out: Tensor, _q: Tensor, _cache: Tensor, _kvB: Tensor, _seq: MlaSeq, _p: MlaParams): void { throw new InternalError('not implemented'); }
export function cpuMlaDecodeAbsorbed(_ctx: CpuOpContext, _out: Tensor, _q: Tensor, _cache: Tensor, _kvB: Tensor, _seq: MlaSeq, _p: MlaParams): void { throw new InternalError('not implemented'); }
