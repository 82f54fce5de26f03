/**
 * Where an archive's files are: a local directory, or an HTTP(S) base URL (any static host, CDN or
 * object-store bucket serving the directory as it is).
 *
 * HTTP reads are streamed to a file on local disk, never held in memory: each request has a
 * deadline to its headers and a deadline between body pieces; a cut body is resumed with a Range
 * request; failures are retried with exponential backoff; a body longer than the manifest says is
 * cut off at once. A 404 is final (missing_chunk); other failures are "unreachable" after the
 * last attempt.
 */
import { createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm, stat, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ArchiveError, MANIFEST_FILE, type ManifestChunk } from "./format.js";
import type { ArchiveReaderOptions } from "./reader-options.js";

export interface ArchiveLocation {
  /** For messages and the peer list: the directory or URL as given. */
  readonly name: string;
  readManifest(signal: AbortSignal): Promise<string>;
  /** A local path holding the chunk's file as served (not yet checked). */
  localChunk(chunk: ManifestChunk, signal: AbortSignal): Promise<string>;
  /** The local copy of `chunk` is no longer needed (HTTP: deleted). */
  dropChunk(chunk: ManifestChunk): Promise<void>;
  close(): Promise<void>;
}

export function isHttpLocation(location: string): boolean {
  return /^https?:\/\//i.test(location);
}

export function openLocation(location: string, options: ArchiveReaderOptions): ArchiveLocation {
  return isHttpLocation(location) ? new HttpLocation(location, options) : new DirLocation(location, options);
}

export class DirLocation implements ArchiveLocation {
  constructor(
    readonly name: string,
    private readonly options: ArchiveReaderOptions,
  ) {}

  async readManifest(): Promise<string> {
    const path = join(this.name, MANIFEST_FILE);
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch (e) {
      throw new ArchiveError(
        "unreachable",
        `${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      );
    }
    if (size > this.options.maxManifestBytes)
      throw new ArchiveError(
        "bad_manifest",
        `${path}: ${size} bytes, more than ${this.options.maxManifestBytes}`,
      );
    return readFile(path, "utf8");
  }

  async localChunk(chunk: ManifestChunk): Promise<string> {
    const path = join(this.name, chunk.file);
    try {
      await stat(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new ArchiveError(code === "ENOENT" ? "missing_chunk" : "unreachable", `${path}: ${code ?? e}`);
    }
    return path;
  }

  async dropChunk(): Promise<void> {}

  async close(): Promise<void> {}
}

/** The URL of `file` under base URL `base` (which may or may not end with a slash). */
export function fileUrl(base: string, file: string): string {
  return `${base.endsWith("/") ? base : `${base}/`}${file}`;
}

export class HttpLocation implements ArchiveLocation {
  private dir: Promise<string> | undefined;
  private closed = false;

  constructor(
    readonly name: string,
    private readonly options: ArchiveReaderOptions,
    private readonly fetchImpl: typeof fetch = fetch,
  ) {}

  async readManifest(signal: AbortSignal): Promise<string> {
    const url = fileUrl(this.name, MANIFEST_FILE);
    return this.withRetries(url, signal, async (attemptSignal) => {
      const res = await this.request(url, {}, attemptSignal);
      if (res.status !== 200) {
        await res.body?.cancel();
        throw httpError(url, res.status);
      }
      const declared = Number(res.headers.get("content-length") ?? Number.NaN);
      if (declared > this.options.maxManifestBytes)
        throw new ArchiveError(
          "bad_manifest",
          `${url}: ${declared} bytes, more than ${this.options.maxManifestBytes}`,
        );
      const parts: Uint8Array[] = [];
      let total = 0;
      for await (const piece of this.body(res, url, attemptSignal)) {
        total += piece.length;
        if (total > this.options.maxManifestBytes)
          throw new ArchiveError("bad_manifest", `${url}: more than ${this.options.maxManifestBytes} bytes`);
        parts.push(piece);
      }
      return Buffer.concat(parts).toString("utf8");
    });
  }

  async localChunk(chunk: ManifestChunk, signal: AbortSignal): Promise<string> {
    const url = fileUrl(this.name, chunk.file);
    const path = join(await this.tempDir(), chunk.file.replaceAll("/", "_"));
    await rm(path, { force: true });
    await this.withRetries(url, signal, async (attemptSignal) => {
      // Resume where the last attempt stopped.
      const have = await stat(path).then(
        (s) => s.size,
        () => 0,
      );
      if (have === chunk.bytes) return;
      const res = await this.request(url, have > 0 ? { range: `bytes=${have}-` } : {}, attemptSignal);
      let append = have > 0 && res.status === 206;
      if (res.status === 200) append = false;
      else if (res.status !== 206 || have === 0) {
        await res.body?.cancel();
        throw httpError(url, res.status);
      }
      if (append && !contentRangeStartsAt(res.headers.get("content-range"), have)) {
        await res.body?.cancel();
        append = false;
        await truncate(path, 0).catch(() => {});
        throw new ArchiveError("unreachable", `${url}: a Range answer that does not start at byte ${have}`);
      }
      const out = createWriteStream(path, { flags: append ? "a" : "w" });
      let written = append ? have : 0;
      try {
        for await (const piece of this.body(res, url, attemptSignal)) {
          written += piece.length;
          if (written > chunk.bytes)
            // Longer than the manifest says: not the manifest's file, whatever it holds.
            throw new ArchiveError("tampered_chunk", `${url}: more than the manifest's ${chunk.bytes} bytes`);
          if (!out.write(piece)) await new Promise<void>((r) => out.once("drain", () => r()));
        }
      } finally {
        await new Promise<void>((resolve, reject) =>
          out.end((e?: Error | null) => (e ? reject(e) : resolve())),
        );
      }
      if (written < chunk.bytes) {
        // Cut short: retried, resuming from here (a host whose file really is shorter answers
        // the resume with 416, which is final).
        throw new ArchiveError("unreachable", `${url}: the body ended at byte ${written} of ${chunk.bytes}`);
      }
    });
    return path;
  }

  async dropChunk(chunk: ManifestChunk): Promise<void> {
    if (this.dir === undefined) return;
    await rm(join(await this.dir, chunk.file.replaceAll("/", "_")), { force: true });
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.dir !== undefined) await rm(await this.dir, { recursive: true, force: true });
  }

  private tempDir(): Promise<string> {
    if (this.closed) throw new ArchiveError("unreachable", `${this.name}: closed`);
    this.dir ??= mkdtemp(join(tmpdir(), "dagsync-archive-"));
    return this.dir;
  }

  private async request(
    url: string,
    headers: Record<string, string>,
    signal: AbortSignal,
  ): Promise<Response> {
    const timeout = AbortSignal.timeout(this.options.requestTimeoutMs);
    try {
      return await this.fetchImpl(url, { headers, signal: AbortSignal.any([signal, timeout]) });
    } catch (e) {
      signal.throwIfAborted();
      const why = timeout.aborted ? `no answer within ${this.options.requestTimeoutMs} ms` : causeOf(e);
      throw new ArchiveError("unreachable", `${url}: ${why}`);
    }
  }

  /** The body's pieces; a pause longer than idleTimeoutMs cuts it ("unreachable", retried). */
  private async *body(res: Response, url: string, signal: AbortSignal): AsyncGenerator<Uint8Array> {
    if (res.body === null) return;
    const reader = res.body.getReader();
    try {
      for (;;) {
        signal.throwIfAborted();
        let timer: NodeJS.Timeout | undefined;
        const idle = new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new ArchiveError("unreachable", `${url}: no bytes for ${this.options.idleTimeoutMs} ms`),
              ),
            this.options.idleTimeoutMs,
          );
        });
        let step: { done: true; value?: undefined } | { done: false; value: Uint8Array };
        try {
          step = await Promise.race([reader.read(), idle]);
        } catch (e) {
          if (e instanceof ArchiveError) throw e;
          signal.throwIfAborted();
          throw new ArchiveError("unreachable", `${url}: ${causeOf(e)}`);
        } finally {
          clearTimeout(timer);
        }
        if (step.done) return;
        yield step.value;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  /** Runs `attempt` until it succeeds, retrying "unreachable" (connection, deadline, 5xx, a cut body) with backoff. */
  private async withRetries<T>(
    url: string,
    signal: AbortSignal,
    attempt: (s: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const { maxAttempts, retryBaseMs, retryMaxMs } = this.options;
    let last: ArchiveError | undefined;
    for (let i = 0; i < maxAttempts; i++) {
      if (i > 0) await sleep(Math.min(retryMaxMs, retryBaseMs * 2 ** (i - 1)), signal);
      signal.throwIfAborted();
      try {
        return await attempt(signal);
      } catch (e) {
        signal.throwIfAborted();
        if (!(e instanceof ArchiveError)) throw new ArchiveError("unreachable", `${url}: ${causeOf(e)}`);
        if (e.code !== "unreachable") throw e;
        last = e;
      }
    }
    throw new ArchiveError(
      last?.code ?? "unreachable",
      `${last?.message ?? url} (after ${maxAttempts} attempts)`,
    );
  }
}

function httpError(url: string, status: number): ArchiveError {
  if (status === 404 || status === 410) return new ArchiveError("missing_chunk", `${url}: HTTP ${status}`);
  // A resume past the end: the host's file is shorter than the manifest says.
  if (status === 416)
    return new ArchiveError("truncated_chunk", `${url}: HTTP 416 (shorter than the manifest says)`);
  return new ArchiveError("unreachable", `${url}: HTTP ${status}`);
}

function contentRangeStartsAt(header: string | null, at: number): boolean {
  const m = header === null ? null : /^bytes (\d+)-/.exec(header);
  return m !== null && Number(m[1]) === at;
}

function causeOf(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  return err.cause?.code ?? err.cause?.message ?? err.message ?? String(e);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}
