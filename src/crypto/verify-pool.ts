/**
 * A pool of worker threads that check Ed25519 signatures off the event loop (issue 16).
 *
 * Why: a full node checking every block's signature (`--verify-block-signatures`) verified them
 * inline, on the thread that also fetches, hashes and writes: one core at most, and the fetch
 * loop stood still while it did. The pool spreads a batch of signatures over its workers, sized
 * to the cores by default, while the main thread goes on.
 *
 * Same verdicts: each worker runs the very verifier the main thread would (verifier.ts, with its
 * shared pre-checks), so a signature gets the same verdict through the pool as without it;
 * input the pool cannot carry (a key not 32 bytes, a signature not 64) is invalid by those
 * pre-checks and answered false without a worker. A worker that dies fails its batch's promise;
 * a fresh one starts when later work needs it.
 *
 * One worker starts with the pool, so that the first batch does not wait for a thread to boot;
 * the others start when work needs them, up to `workers`: a batch goes to the least loaded
 * worker, and a new one starts only when every started one has a backlog or a batch is big
 * enough to split. A full node that checks only certifier blocks (a few signatures per 100
 * commits) then runs one worker, not one per core: each is a V8 isolate, ≈0.2 core-s to start
 * and ≈15 MB resident.
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, type SignatureItem } from "../core/index.js";
import type { VerifierBackend } from "./verifier.js";
import type { VerifyAnswer, VerifyJob } from "./verify-worker.js";

export type { SignatureItem };

export interface VerifyPoolOptions {
  /**
   * Most worker threads, started as work needs them. Default: the machine's cores
   * (`os.availableParallelism()`).
   */
  readonly workers: number;
  /** The verifier each worker runs. Default "native". */
  readonly backend: VerifierBackend;
  /**
   * Fewest signatures sent to one worker, signatures. Default 16. A batch smaller than
   * `workers × this` goes to fewer workers: a message to a worker costs about one verify.
   */
  readonly minSignaturesPerWorker: number;
  /**
   * Backlog at which another worker starts, signatures: when the least loaded started worker has
   * at least this many sent and unanswered, and the pool has room. Default 64 (≈5 ms of checks).
   * A certifier-only node sends bursts of a few signatures, which one worker clears in
   * well under a millisecond. A batch big enough to split (`minSignaturesPerWorker`) puts each
   * part on a worker of its own, starting them as needed: `--verify-block-signatures` answers of
   * ≈1,000 blocks start up to 62.
   */
  readonly startWorkerBacklog: number;
}

export const DEFAULT_VERIFY_POOL_OPTIONS: VerifyPoolOptions = {
  workers: availableParallelism(),
  backend: "native",
  minSignaturesPerWorker: 16,
  startWorkerBacklog: 64,
};

// Compiled, the worker is verify-worker.js beside this module. Under tsx (tests, an edited
// checkout) this module is the .ts source, and a worker thread does not inherit tsx's loader:
// it registers tsx (a dev dependency, present wherever the sources run) before loading it.
const FROM_SOURCE = import.meta.url.endsWith(".ts");
const WORKER_URL = new URL(FROM_SOURCE ? "./verify-worker.ts" : "./verify-worker.js", import.meta.url);

function startWorker(workerData: unknown): Worker {
  if (!FROM_SOURCE) return new Worker(WORKER_URL, { workerData });
  const tsx = import.meta.resolve("tsx/esm/api");
  const shim = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(WORKER_URL.href)}); });`;
  return new Worker(shim, { eval: true, workerData });
}

interface Slot {
  worker: Worker;
  pending: Map<number, { resolve: (v: Uint8Array) => void; reject: (e: Error) => void }>;
  /** Signatures sent and not answered: the next batch goes to the least loaded. */
  load: number;
}

export class VerifyPool {
  readonly options: VerifyPoolOptions;
  private readonly slots: Slot[] = [];
  private nextId = 0;
  private closed = false;

  constructor(options: Partial<VerifyPoolOptions> = {}) {
    this.options = { ...DEFAULT_VERIFY_POOL_OPTIONS, ...options };
    const { workers, minSignaturesPerWorker, startWorkerBacklog } = this.options;
    if (!Number.isSafeInteger(workers) || workers < 1)
      throw new RangeError(`verify pool workers must be a positive integer, not ${workers}`);
    if (!Number.isSafeInteger(minSignaturesPerWorker) || minSignaturesPerWorker < 1)
      throw new RangeError(
        `minSignaturesPerWorker must be a positive integer, not ${minSignaturesPerWorker}`,
      );
    if (!Number.isSafeInteger(startWorkerBacklog) || startWorkerBacklog < 1)
      throw new RangeError(`startWorkerBacklog must be a positive integer, not ${startWorkerBacklog}`);
    this.slots.push(this.start());
  }

  /** Workers started so far (at most `options.workers`). */
  get workers(): number {
    return this.slots.length;
  }

  /** One verdict per item, in order. */
  async verify(items: readonly SignatureItem[]): Promise<boolean[]> {
    if (this.closed) throw new Error("verify pool is closed");
    const verdicts = new Array<boolean>(items.length).fill(false);
    const sendable: number[] = [];
    items.forEach((item, i) => {
      if (item.publicKey.length === PUBLIC_KEY_LENGTH && item.signature.length === SIGNATURE_LENGTH)
        sendable.push(i);
    });
    if (sendable.length === 0) return verdicts;
    const parts = Math.max(
      1,
      Math.min(this.options.workers, Math.floor(sendable.length / this.options.minSignaturesPerWorker)),
    );
    const per = Math.ceil(sendable.length / parts);
    const jobs: Promise<void>[] = [];
    const used = new Set<Slot>();
    for (let p = 0; p < parts; p++) {
      const indices = sendable.slice(p * per, (p + 1) * per);
      if (indices.length === 0) continue;
      const slot = this.pick(used, parts > 1);
      used.add(slot);
      jobs.push(
        this.send(
          indices.map((i) => items[i]!),
          slot,
        ).then((answer) => {
          indices.forEach((i, k) => {
            verdicts[i] = answer[k] === 1;
          });
        }),
      );
    }
    await Promise.all(jobs);
    return verdicts;
  }

  /** Stops every worker; batches in flight fail (their callers then verify inline, or stop). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const closed = new Error("verify pool is closed");
    for (const slot of this.slots) {
      const pending = [...slot.pending.values()];
      slot.pending.clear();
      for (const p of pending) p.reject(closed);
    }
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private send(items: readonly SignatureItem[], slot: Slot): Promise<Uint8Array> {
    const n = items.length;
    const keys = new Uint8Array(n * PUBLIC_KEY_LENGTH);
    const signatures = new Uint8Array(n * SIGNATURE_LENGTH);
    const messageLengths = new Uint32Array(n);
    let total = 0;
    items.forEach((item, i) => {
      keys.set(item.publicKey, i * PUBLIC_KEY_LENGTH);
      signatures.set(item.signature, i * SIGNATURE_LENGTH);
      messageLengths[i] = item.message.length;
      total += item.message.length;
    });
    const messages = new Uint8Array(total);
    let offset = 0;
    for (const item of items) {
      messages.set(item.message, offset);
      offset += item.message.length;
    }
    const id = this.nextId++;
    const job: VerifyJob = { id, keys, signatures, messages, messageLengths };
    slot.load += n;
    // Held while it has work, so that a process waiting only on a batch does not exit under it.
    if (slot.pending.size === 0) slot.worker.ref();
    const settle = () => {
      slot.load -= n;
      if (slot.pending.size === 0) slot.worker.unref();
    };
    return new Promise<Uint8Array>((resolve, reject) => {
      slot.pending.set(id, {
        resolve: (v) => {
          settle();
          resolve(v);
        },
        reject: (e) => {
          settle();
          reject(e);
        },
      });
      slot.worker.postMessage(job, [keys.buffer, signatures.buffer, messages.buffer, messageLengths.buffer]);
    });
  }

  /**
   * The worker for one part of a batch: the least loaded one that has no other part of it
   * (`used`), or a new one while there is room, when
   * - the batch is split (`split`) and every started worker already has a part of it or other
   *   work: the parts of one batch run side by side;
   * - or every started worker has at least `startWorkerBacklog` signatures to check: a few
   *   signatures queued behind a few others wait less than a new worker takes to start, and
   *   starting one costs far more.
   * With the pool full, the least loaded worker, whatever it holds.
   */
  private pick(used: ReadonlySet<Slot>, split: boolean): Slot {
    const leastLoaded = (slots: readonly Slot[]) =>
      slots.reduce<Slot | undefined>((a, b) => (a === undefined || b.load < a.load ? b : a), undefined);
    const best = leastLoaded(this.slots.filter((s) => !used.has(s))) ?? leastLoaded(this.slots);
    if (best !== undefined) {
      const busy = split ? used.has(best) || best.load > 0 : best.load >= this.options.startWorkerBacklog;
      if (!busy || this.slots.length >= this.options.workers) return best;
    }
    const slot = this.start();
    this.slots.push(slot);
    return slot;
  }

  private start(): Slot {
    const worker = startWorker({ backend: this.options.backend });
    // An idle pool never keeps a process alive (send() holds it while a batch is out).
    worker.unref();
    const slot: Slot = { worker, pending: new Map(), load: 0 };
    worker.on("message", (answer: VerifyAnswer) => {
      const p = slot.pending.get(answer.id);
      slot.pending.delete(answer.id);
      p?.resolve(answer.verdicts);
    });
    const fail = (e: Error) => {
      const pending = [...slot.pending.values()];
      slot.pending.clear();
      for (const p of pending) p.reject(e);
      // Out of the pool; pick() starts another when work needs one.
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots.splice(i, 1);
    };
    worker.on("error", (e) => fail(e instanceof Error ? e : new Error(String(e))));
    worker.on("exit", (code) => {
      if (!this.closed) fail(new Error(`verify worker exited with code ${code}`));
    });
    return slot;
  }
}
