/**
 * Helpers for the server integration tests: temporary devnets and stores, real SyncServers on
 * loopback, typed (decoding) and raw (PeerClient) clients, raw-bytes gRPC calls, and checks that a
 * FetchCommits response verifies under the core rules.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { credentials, Client as GrpcClient, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import type { CommitsResponse } from "../../src/client/peer-client.js";
import {
  type CommitEntry,
  parseCommit,
  rawFieldSize,
  sha256,
  verifyCommitBatch,
} from "../../src/core/index.js";
import { NativeVerifier } from "../../src/crypto/index.js";
import type { DevnetChain, DevnetOptions, GeneratedCommit } from "../../src/devnet/chain.js";
import { type DevnetSummary, writeDevnet } from "../../src/devnet/write.js";
import { Admin } from "../../src/gen/dagsync/v1/admin_pb.js";
import { StateSync } from "../../src/gen/dagsync/v1/sync_pb.js";
import { silentLogger } from "../../src/node/logger.js";
import { SyncServer, type SyncServerConfig } from "../../src/server/index.js";
import { type ApplyUnit, Store } from "../../src/store/index.js";

/** A fresh temporary directory; `rm` it when done. */
export function tempDir(prefix = "dagsync-test-"): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** A devnet written to a temporary directory (4 identical validator stores). */
export interface DevnetFixture {
  readonly dir: string;
  readonly summary: DevnetSummary;
  /** Store directory of validator i. */
  storePath(i: number): string;
  remove(): Promise<void>;
}

export async function makeDevnet(options: Partial<DevnetOptions>): Promise<DevnetFixture> {
  const root = await tempDir("dagsync-devnet-");
  const dir = join(root, "devnet");
  const summary = await writeDevnet(dir, options);
  return {
    dir,
    summary,
    storePath(i) {
      const v = summary.validators[i];
      if (v === undefined) throw new Error(`the devnet has no validator ${i}`);
      return v.store;
    },
    remove: () => removeDir(root),
  };
}

/**
 * A store holding an in-memory DevnetChain's first `count` commits (all of them by default).
 * `certified(index)` decides which commits keep their certifier blocks (all by default), to make
 * stores whose certifiers exist only at some indices.
 */
export async function buildStore(
  dir: string,
  chain: DevnetChain,
  opts: { count?: number; certified?: (index: number) => boolean } = {},
): Promise<{ store: Store; commits: GeneratedCommit[] }> {
  const store = await Store.open(dir, { genesis: chain.genesis.bytes });
  const commits: GeneratedCommit[] = [];
  for (const c of chain.commits()) {
    if (opts.count !== undefined && commits.length >= opts.count) break;
    commits.push(c);
  }
  await store.apply(commits.map((c) => toUnit(c, opts.certified?.(c.index) ?? true)));
  return { store, commits };
}

/** A generated commit as an ApplyUnit, with or without its certifier blocks. */
export function toUnit(c: GeneratedCommit, withCertifiers = true): ApplyUnit {
  return withCertifiers ? c : { ...c, certifierBlocks: undefined };
}

export type ServerExtras = Omit<SyncServerConfig, "store" | "log">;

/** A SyncServer on 127.0.0.1 with an OS-chosen port. */
export interface RunningServer {
  readonly server: SyncServer;
  readonly store: Store;
  readonly port: number;
  /** "127.0.0.1:PORT" */
  readonly address: string;
  /** "http://127.0.0.1:PORT" */
  readonly baseUrl: string;
  /** Stops the server (and closes the store when the server opened it). */
  stop(): Promise<void>;
}

export async function startServer(store: Store, extras: ServerExtras = {}): Promise<RunningServer> {
  const server = new SyncServer({ store, log: silentLogger(), ...extras });
  const port = await server.start("127.0.0.1:0");
  const address = `127.0.0.1:${port}`;
  return { server, store, port, address, baseUrl: `http://${address}`, stop: () => server.stop() };
}

/** Opens a store directory (a devnet validator's store) and serves it; `stop` closes both. */
export async function serveStoreDir(path: string, extras: ServerExtras = {}): Promise<RunningServer> {
  const store = await Store.open(path);
  const running = await startServer(store, extras);
  return {
    ...running,
    async stop() {
      await running.stop();
      await store.close();
    },
  };
}

/** Decoding clients of the generated services (connect-node, gRPC over HTTP/2). */
export function typedClients(baseUrl: string): {
  sync: Client<typeof StateSync>;
  admin: Client<typeof Admin>;
} {
  const transport = createGrpcTransport({ baseUrl });
  return { sync: createClient(StateSync, transport), admin: createClient(Admin, transport) };
}

/** Result of a raw gRPC call. */
export interface RawResult {
  readonly code: status;
  readonly details: string;
  readonly trailers: Metadata | undefined;
  readonly response: Buffer | undefined;
}

/**
 * Calls `path` with `body` sent as-is (no encoding), through grpc-js, so that malformed or
 * oversized requests reach the server.
 */
export function rawUnary(address: string, path: string, body: Uint8Array): Promise<RawResult> {
  const client = new GrpcClient(address, credentials.createInsecure(), {
    "grpc.max_send_message_length": 64 * 1024 * 1024,
  });
  return new Promise<RawResult>((resolve) => {
    client.makeUnaryRequest(
      path,
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => b,
      body,
      new Metadata(),
      { deadline: Date.now() + 10_000 },
      (error: ServiceError | null, response?: Buffer) => {
        client.close();
        if (error !== null)
          resolve({
            code: error.code,
            details: error.details,
            trailers: error.metadata,
            response: undefined,
          });
        else resolve({ code: status.OK, details: "", trailers: undefined, response });
      },
    );
  });
}

/** Digest of commit `index - 1` (digest(Genesis) for index 1), to check the first link of a batch. */
export async function previousDigestOf(store: Store, index: number): Promise<Uint8Array> {
  if (index === 1) return store.genesis.digest;
  const bytes = await store.getCommit(index - 1);
  assert.ok(bytes !== undefined, `commit ${index - 1} is not in the store`);
  return sha256(bytes);
}

/**
 * Asserts that a FetchCommits response starting at `start` verifies in full under
 * verifyCommitBatch with the committee of its epoch (read from `store`), and returns its commits.
 */
export async function assertBatchVerifies(
  store: Store,
  start: number,
  response: Pick<CommitsResponse, "commits" | "certifierBlocks">,
): Promise<CommitEntry[]> {
  assert.ok(response.commits.length > 0, `the batch from ${start} is empty`);
  const first = parseCommit(response.commits[0]!);
  const committee = await store.getCommittee(first.epoch);
  assert.ok(committee !== undefined, `no committee for epoch ${first.epoch}`);
  const result = verifyCommitBatch({
    commits: response.commits,
    certifierBlocks: response.certifierBlocks,
    expectedStart: start,
    previousDigest: await previousDigestOf(store, start),
    committee,
    chainId: store.genesis.genesis.chainId,
    verifier: new NativeVerifier(),
  });
  assert.equal(result.error, undefined, `batch from ${start}: ${result.error?.message}`);
  assert.equal(result.commits.length, response.commits.length, `batch from ${start} verifies only in part`);
  return result.commits;
}

/** Size on the wire of a FetchCommits/FetchBlocks response made of these length-delimited fields. */
export function wireSize(...groups: readonly (readonly Uint8Array[])[]): number {
  let size = 0;
  for (const group of groups) for (const b of group) size += rawFieldSize(b.length);
  return size;
}

/** Open SubscribeCommits streams according to the server's gauge. */
export async function openSubscribers(server: RunningServer): Promise<number> {
  return (await server.server.metrics.subscribers.get()).values[0]?.value ?? 0;
}

/** Polls `check` until it returns true or `timeoutMs` passes. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5_000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
