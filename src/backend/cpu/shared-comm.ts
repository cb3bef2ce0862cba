/**
 * HostComm among worker threads of one process (N CPU "ranks" in tests): every rank writes its
 * buffer into its own slot of one SharedArrayBuffer, waits at a barrier, and reads all slots. Sums
 * run in rank order so every rank gets the same bits. A barrier that times out throws instead of
 * hanging (a rank died).
 */
import type { HostComm } from '../backend.js';
import { InternalError } from '../../util/errors.js';

const CTL_BYTES = 16; // [arrived, generation] as Int32

export class SharedMemoryComm implements HostComm {
  private readonly ctl: Int32Array;
  private readonly slots: Float32Array[];

  /** The shared buffer for `size` ranks whose collectives move at most maxFloats values each. */
  static buffer(size: number, maxFloats: number): SharedArrayBuffer {
    return new SharedArrayBuffer(CTL_BYTES + size * maxFloats * 4);
  }

  constructor(
    sab: SharedArrayBuffer,
    readonly rank: number,
    readonly size: number,
    private readonly timeoutMs = 120_000,
  ) {
    this.ctl = new Int32Array(sab, 0, 4);
    const maxFloats = (sab.byteLength - CTL_BYTES) / 4 / size;
    this.slots = Array.from({ length: size }, (_, k) => new Float32Array(sab, CTL_BYTES + k * maxFloats * 4, maxFloats));
  }

  allReduceSum(data: Float32Array): void {
    this.put(data);
    for (let i = 0; i < data.length; i++) {
      let s = 0;
      for (let k = 0; k < this.size; k++) s += this.slots[k][i];
      data[i] = s;
    }
    this.barrier(); // nobody overwrites a slot before every rank has read it
  }

  allGather(out: Float32Array, x: Float32Array): void {
    this.put(x);
    for (let k = 0; k < this.size; k++) out.set(this.slots[k].subarray(0, x.length), k * x.length);
    this.barrier();
  }

  private put(x: Float32Array): void {
    if (x.length > this.slots[0].length) throw new InternalError(`collective of ${x.length} values exceeds the shared slot of ${this.slots[0].length}`);
    this.slots[this.rank].set(x);
    this.barrier();
  }

  private barrier(): void {
    const gen = Atomics.load(this.ctl, 1);
    if (Atomics.add(this.ctl, 0, 1) === this.size - 1) {
      Atomics.store(this.ctl, 0, 0);
      Atomics.add(this.ctl, 1, 1);
      Atomics.notify(this.ctl, 1);
      return;
    }
    const t0 = Date.now();
    while (Atomics.load(this.ctl, 1) === gen) {
      if (Date.now() - t0 > this.timeoutMs) throw new InternalError(`rank ${this.rank}: a tensor-parallel peer did not reach the barrier in ${this.timeoutMs} ms`);
      Atomics.wait(this.ctl, 1, gen, 1000);
    }
  }
}
