/**
 * Device memory with owners: every allocation names what it is for ('weights', 'cache',
 * 'activations', 'scratch', ...), usage is reported per owner, and dispose() frees everything.
 * Nothing waits for GC (DESIGN §4).
 */
import { assert } from '../../util/assert.js';
import type { CudaDriver } from './driver.js';

export interface DeviceBuffer {
  readonly ptr: bigint;
  readonly bytes: number;
  readonly owner: string;
}

export class DeviceAllocator {
  private readonly live = new Map<bigint, DeviceBuffer>();
  /** cuMemAlloc calls so far (tests assert the steady-state step loop makes none). */
  allocations = 0;

  constructor(private readonly driver: CudaDriver) {}

  /** At least 256 bytes, so zero-element tensors still get a distinct valid pointer. */
  alloc(bytes: number, owner: string): DeviceBuffer {
    assert(Number.isSafeInteger(bytes) && bytes >= 0, () => `device alloc of ${bytes} bytes for ${owner}`);
    const size = Math.max(256, Math.ceil(bytes / 256) * 256);
    const buf: DeviceBuffer = { ptr: this.driver.memAlloc(size), bytes: size, owner };
    this.allocations++;
    this.live.set(buf.ptr, buf);
    return buf;
  }

  free(buf: DeviceBuffer): void {
    if (!this.live.delete(buf.ptr)) return;
    this.driver.memFree(buf.ptr);
  }

  /** Bytes held per owner. */
  usage(): Map<string, number> {
    const m = new Map<string, number>();
    for (const b of this.live.values()) m.set(b.owner, (m.get(b.owner) ?? 0) + b.bytes);
    return m;
  }

  dispose(): void {
    for (const b of this.live.values()) this.driver.memFree(b.ptr);
    this.live.clear();
  }
}
