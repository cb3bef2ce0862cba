/** Typed errors. Messages name the thing and give expected vs found (DESIGN §5). */

export class BailingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Bad model directory, config, checkpoint or tokenizer. */
export class ModelLoadError extends BailingError {
  constructor(
    message: string,
    readonly file?: string,
    readonly key?: string,
  ) {
    super(file ? `${file}${key ? ` [${key}]` : ''}: ${message}` : message);
  }
}

/** Invalid user input (CLI flags, request fields). */
export class InvalidRequestError extends BailingError {
  constructor(
    message: string,
    readonly param?: string,
  ) {
    super(message);
  }
}

/** A broken invariant: a bug in bailing, not in the input. */
export class InternalError extends BailingError {}

/** An operation the current build does not support (e.g. FP8 checkpoints). */
export class UnsupportedError extends BailingError {}

/** A CUDA driver, cuBLASLt or NVRTC call failed (or the library is missing). */
export class CudaError extends BailingError {
  constructor(
    readonly api: string,
    readonly code: number,
    detail: string,
  ) {
    super(`${api} failed: ${detail} (code ${code})`);
  }
}

/** NVRTC rejected a kernel source; `log` is the compiler's full output. */
export class KernelCompileError extends BailingError {
  constructor(
    readonly file: string,
    readonly log: string,
  ) {
    super(`kernel compile failed: ${file}\n${log}`);
  }
}
