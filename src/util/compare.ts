/** Error metrics for conformance tests and parity reports. */

export interface ErrorStats {
  maxAbs: number;
  /** max |a-b| / max(|b|, floor): relative error with a floor so tiny values do not dominate. */
  maxRel: number;
  /** Σ(a-b)² / Σb² */
  nmse: number;
  /** index of the max relative error */
  worst: number;
}

export function compare(actual: ArrayLike<number>, expected: ArrayLike<number>, relFloor = 1e-3): ErrorStats {
  if (actual.length !== expected.length) throw new Error(`compare: ${actual.length} vs ${expected.length} values`);
  let maxAbs = 0, maxRel = 0, num = 0, den = 0, worst = -1;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  const floor = Math.max(relFloor * scale, 1e-30);
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Infinity : Math.max(maxAbs, d);
    const r = d / Math.max(Math.abs(expected[i]), floor);
    if (!(r <= maxRel)) {
      maxRel = Number.isNaN(r) ? Infinity : r;
      worst = i;
    }
    num += d * d;
    den += expected[i] * expected[i];
  }
  return { maxAbs, maxRel, nmse: den > 0 ? num / den : num, worst };
}

export function fmtStats(s: ErrorStats): string {
  return `maxAbs=${s.maxAbs.toExponential(2)} maxRel=${s.maxRel.toExponential(2)} nmse=${s.nmse.toExponential(2)}`;
}
