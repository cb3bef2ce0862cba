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
