/** Store errors carry a code; open failures name the path and what to do. */
import { DagsyncError } from "../core/errors.js";

export type StoreErrorCode =
  | "in_use"
  | "not_found"
  | "not_initialized"
  | "foreign_genesis"
  | "corrupt"
  | "out_of_order";

export class StoreError extends DagsyncError {
  override readonly name = "StoreError";
  constructor(
    override readonly code: StoreErrorCode,
    message: string,
  ) {
    super(code, message);
  }

  static notFound(path: string): StoreError {
    return new StoreError(
      "not_found",
      `store ${path} does not exist (create one with \`dagsync devnet\` or \`dagsync sync\`)`,
    );
  }

  static fromOpen(path: string, e: unknown): StoreError {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    const code = cause?.code ?? (e as { code?: string }).code;
    const detail = cause?.message ?? (e instanceof Error ? e.message : String(e));
    if (code === "LEVEL_LOCKED")
      return new StoreError(
        "in_use",
        `store ${path} is in use by another process (stop it, or use another --store)`,
      );
    if (/does not exist/i.test(detail)) return StoreError.notFound(path);
    return new StoreError("corrupt", `store ${path} cannot be opened: ${detail}`);
  }
}
