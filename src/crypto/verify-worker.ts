/**
 * A verify pool's worker thread (verify-pool.ts): checks the signatures it is sent with the
 * backend it was started with, and answers one verdict byte per signature (1 valid, 0 not).
 */
import { parentPort, workerData } from "node:worker_threads";
import { PUBLIC_KEY_LENGTH as K, SIGNATURE_LENGTH as S } from "../core/ed25519-lengths.js";
import { createVerifier, type VerifierBackend } from "./verifier.js";

export interface VerifyJob {
  readonly id: number;
  /** Per signature: public key (32), signature (64), then the message; lengths in `messageLengths`. */
  readonly keys: Uint8Array;
  readonly signatures: Uint8Array;
  readonly messages: Uint8Array;
  readonly messageLengths: Uint32Array;
}

export interface VerifyAnswer {
  readonly id: number;
  readonly verdicts: Uint8Array;
}

const verifier = createVerifier((workerData as { backend: VerifierBackend }).backend);
parentPort?.on("message", (job: VerifyJob) => {
  const n = job.messageLengths.length;
  const verdicts = new Uint8Array(n);
  let offset = 0;
  for (let i = 0; i < n; i++) {
    const length = job.messageLengths[i]!;
    verdicts[i] = verifier.verify(
      job.keys.subarray(i * K, (i + 1) * K),
      job.messages.subarray(offset, offset + length),
      job.signatures.subarray(i * S, (i + 1) * S),
    )
      ? 1
      : 0;
    offset += length;
  }
  parentPort?.postMessage({ id: job.id, verdicts } satisfies VerifyAnswer, [verdicts.buffer]);
});
