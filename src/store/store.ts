/**
 * The node's store: two LevelDB databases through `level` (DESIGN.md §6), in `<store>/chain`
 * and `<store>/blocks`.
 *
 * | database | sublevel     | key                            | value                                 |
 * |----------|--------------|--------------------------------|---------------------------------------|
 * | chain    | commits      | index (u64 BE)                 | Commit, canonical bytes                |
 * | chain    | certifiers   | index (u64 BE)                 | certifier blocks of that commit, each by blocks/ key or bytes (StoredCertifiers, certifiers.ts) |
 * | chain    | committees   | epoch (u64 BE)                 | Committee                              |
 * | chain    | epoch_ends   | epoch (u64 BE)                 | index of the epoch's last commit (u64 BE) |
 * | chain    | meta         | name (UTF-8)                   | genesis bytes, watermarks              |
 * | chain    | peers        | "known" (UTF-8)                | the known peer set (StoredKnownPeers, src/discovery) |
 * | blocks   | (none)       | round, author (u32 BE), digest | SignedBlock, canonical bytes           |
 *
 * Values are the bytes as received, so serving is a read and a copy. Certifier blocks are the one
 * exception: where blocks/ holds one (it is also an ordinary block of a later commit), its
 * certifier entry keeps its key there instead of a second copy (certifiers.ts), and serving reads
 * it from blocks/.
 *
 * Why two databases, where DESIGN.md §6 has one atomic batch per applied unit: blocks are ≈95 %
 * of the bytes and arrive almost in round order (a commit may include blocks a round or two older
 * than its predecessor's), so alone in a database their table files barely overlap and LevelDB
 * moves most of them down the levels without rewriting them. Sharing a key space with the
 * watermark and the commits, which every batch also writes, made every level-0 file overlap every
 * other, so LevelDB rewrote far more in compaction and stalled writes at its level-0 limit: a
 * 100k-block catch-up (235 MB of blocks) wrote 870 MB to disk, 392 MB of it in compaction; now
 * ≈645 MB, 170 MB in compaction.
 *
 * Atomicity is kept by order: the blocks of a unit are written (one batch) before the batch that
 * writes its commit and moves the watermark, and pruning raises the watermark before it deletes.
 * So every commit at or below the watermark has its blocks whatever the point of a crash; a crash
 * between the two batches leaves blocks above the watermark, which are valid (checked by digest
 * against a certified commit) and written again, identically, on resume.
 */
import { type Dirent, existsSync, statSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { AbstractBatchOperation } from "abstract-level";
import { Level } from "level";
import {
  bytesEqual,
  CommitteeView,
  type GenesisEntry,
  parseCommit,
  parseGenesis,
  shortHex,
} from "../core/index.js";
import { type Committee, CommitteeSchema } from "../gen/dagsync/v1/types_pb.js";
import {
  CertifierRefs,
  type CertifierSlot,
  decodeCertifiers,
  encodeCertifiers,
  keyId,
} from "./certifiers.js";
import { StoreError } from "./errors.js";
import { type BlockKeyRef, blockKey, indexKey, readIndexKey } from "./keys.js";
import { DEFAULT_STORE_LIMITS, type PruneOptions, resolvePruneOptions, type StoreLimits } from "./options.js";

type Bytes = Uint8Array;
const TABLE_ENCODING = { keyEncoding: "view", valueEncoding: "view" } as const;
function openTable(db: Level<Bytes, Bytes>, name: string) {
  return db.sublevel<Bytes, Bytes>(name, TABLE_ENCODING);
}
type Table = ReturnType<typeof openTable>;
type BatchOp = AbstractBatchOperation<Level<Bytes, Bytes>, Bytes, Bytes>;
type BlockOp = { type: "put"; key: Bytes; value: Bytes } | { type: "del"; key: Bytes };

/**
 * LevelDB's manual compaction of the keys from `start` to `end`: classic-level's `compactRange`,
 * which `level` runs in Node but does not declare. Keys are the database's own, so a sublevel's
 * carry its prefix. LevelDB includes `end` (classic-level's documentation says it does not;
 * callers pass an end past the last deleted key, right either way). It runs on libuv's thread
 * pool, and LevelDB splits it into compactions of bounded size itself.
 */
function compactRange(db: Level<Bytes, Bytes>, start: Bytes, end: Bytes): Promise<void> {
  if (db.supports.additionalMethods.compactRange !== true) return Promise.resolve();
  return (db as unknown as { compactRange(start: Bytes, end: Bytes): Promise<void> }).compactRange(
    start,
    end,
  );
}

/** The lowest block key of a round (author 0, no digest). */
function roundStartKey(round: number): Bytes {
  return blockKey({ round, author: 0, digest: new Uint8Array(0) });
}

/** A key above every block key of a round (author 0xffffffff, a digest of 0xff bytes and one more). */
function roundEndKey(round: number): Bytes {
  return blockKey({ round, author: 0xffffffff, digest: new Uint8Array(33).fill(0xff) });
}

function concat(a: Bytes, b: Bytes): Bytes {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/**
 * Version of the on-disk layout: 2 since blocks have their own database, 3 since certifier
 * blocks are kept as keys into blocks/ where it holds them. A store of layout 1 is refused with a
 * message saying so; layout 2 reads as it is (its certifier values decode as all bytes). Devnet
 * summaries record the layout they were written with, so that cached devnets are regenerated
 * rather than misread or measured in an old layout.
 */
export const STORE_LAYOUT = 3;
const DB_OPTIONS = { keyEncoding: "view", valueEncoding: "view" } as const;

/** The two LevelDB databases of the store in `path` (module comment). */
export function storeDatabases(path: string): { chain: string; blocks: string } {
  return { chain: join(path, "chain"), blocks: join(path, "blocks") };
}

/**
 * Bytes on disk of the files under `path` (a store directory: both databases, their logs and
 * manifests), summed recursively; 0 when it does not exist.
 */
export async function diskBytes(path: string): Promise<number> {
  let entries: Dirent[];
  try {
    entries = await readdir(path, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw e;
  }
  let total = 0;
  for (const e of entries) {
    const child = join(path, e.name);
    if (e.isDirectory()) total += await diskBytes(child);
    else if (e.isFile()) total += (await stat(child).catch(() => undefined))?.size ?? 0;
  }
  return total;
}

export interface Watermarks {
  /** Highest commit whose certification and links are verified (it may still lack blocks). */
  readonly highestVerified: number;
  /** Highest commit stored with all its blocks. */
  readonly highestSynced: number;
  /** Digest of the highest synced commit (digest(Genesis) or the checkpoint's when none is stored). */
  readonly highestSyncedDigest: Bytes;
  /** Epoch the next commit belongs to. */
  readonly epoch: number;
  /** Lowest commit that can be served. */
  readonly lowestAvailable: number;
}

/** A verified commit ready to store. */
export interface ApplyUnit {
  readonly index: number;
  readonly epoch: number;
  readonly commitBytes: Bytes;
  readonly commitDigest: Bytes;
  /** The committed blocks, with their refs (from the commit). */
  readonly blocks: readonly { readonly ref: BlockKeyRef; readonly bytes: Bytes }[];
  /** Certifier blocks that certify this commit, when it ends a verified batch. */
  readonly certifierBlocks?: readonly Bytes[] | undefined;
  /** The next epoch's committee, when this commit ends its epoch. */
  readonly nextCommittee?: Committee | undefined;
}

export interface TrustedCheckpoint {
  readonly index: number;
  readonly digest: Bytes;
  /** Committee of the epoch of commit index + 1. */
  readonly committee: Committee;
}

export interface OpenOptions {
  /** Encoded Genesis; required to create a store, checked against an existing one. */
  readonly genesis?: Bytes | undefined;
  /** Start a new store from a trusted checkpoint instead of genesis. */
  readonly checkpoint?: TrustedCheckpoint | undefined;
  /** Refuse to create a store where none exists (default true when no genesis is given). */
  readonly mustExist?: boolean | undefined;
  /** Limits (src/store/options.ts); each defaults to DEFAULT_STORE_LIMITS. */
  readonly limits?: Partial<StoreLimits> | undefined;
}

const META = {
  genesis: "genesis",
  watermarks: "watermarks",
} as const;

function encodeWatermarks(w: Watermarks): Bytes {
  const out = new Uint8Array(32 + 32);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(w.highestVerified));
  view.setBigUint64(8, BigInt(w.highestSynced));
  view.setBigUint64(16, BigInt(w.epoch));
  view.setBigUint64(24, BigInt(w.lowestAvailable));
  out.set(w.highestSyncedDigest, 32);
  return out;
}

function decodeWatermarks(bytes: Bytes): Watermarks {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    highestVerified: Number(view.getBigUint64(0)),
    highestSynced: Number(view.getBigUint64(8)),
    epoch: Number(view.getBigUint64(16)),
    lowestAvailable: Number(view.getBigUint64(24)),
    highestSyncedDigest: bytes.slice(32, 64),
  };
}

const utf8 = new TextEncoder();

/** The one key of the `peers` table. */
const KNOWN_PEERS_KEY = "known";

export class Store {
  /** Certifier entries holding bytes that a later apply may turn into keys (certifiers.ts). */
  private readonly certifierRefs: CertifierRefs;

  private constructor(
    readonly path: string,
    private readonly db: Level<Bytes, Bytes>,
    private readonly blocksDb: Level<Bytes, Bytes>,
    private readonly tables: {
      commits: Table;
      certifiers: Table;
      committees: Table;
      epochEnds: Table;
      meta: Table;
      peers: Table;
    },
    readonly genesis: GenesisEntry,
    private marks: Watermarks,
    /** Last commit index of each ended epoch, ascending by epoch: small, so kept in memory. */
    private readonly epochEnds: { epoch: number; end: number }[],
    limits: StoreLimits,
  ) {
    this.certifierRefs = new CertifierRefs(limits.pendingCertifierEntries);
  }

  /**
   * Opens (or creates) the store in `path`. Fails with a StoreError when another process holds
   * it, when it belongs to another genesis, or when it is missing and `mustExist` is set.
   */
  static async open(path: string, options: OpenOptions = {}): Promise<Store> {
    const mustExist = options.mustExist ?? options.genesis === undefined;
    const limits = { ...DEFAULT_STORE_LIMITS, ...options.limits };
    if (!Number.isSafeInteger(limits.maxOpenFiles) || limits.maxOpenFiles < 16)
      throw new RangeError(`maxOpenFiles must be an integer of at least 16, not ${limits.maxOpenFiles}`);
    if (!Number.isSafeInteger(limits.pendingCertifierEntries) || limits.pendingCertifierEntries < 0)
      throw new RangeError(
        `pendingCertifierEntries must be a non-negative integer, not ${limits.pendingCertifierEntries}`,
      );
    const paths = storeDatabases(path);
    // LevelDB creates the directory (with LOCK and LOG) even when told not to create the database,
    // and reports a missing parent directory as an I/O error: check first, and leave nothing behind.
    if (existsSync(join(path, "CURRENT")))
      throw new StoreError(
        "corrupt",
        `store ${path} is a single LevelDB database, not a dagsync store of this version (chain/ and blocks/ in one directory); a store written by dagsync 0.1 must be synced again into a new --store`,
      );
    if (existsSync(path) && !statSync(path).isDirectory())
      throw new StoreError("corrupt", `store ${path} cannot be opened: it is a file, not a directory`);
    if (mustExist && !existsSync(paths.chain)) throw StoreError.notFound(path);
    if (existsSync(paths.chain) && !existsSync(paths.blocks))
      throw new StoreError("corrupt", `store ${path} has no blocks database (${paths.blocks})`);
    const dbOptions = { ...DB_OPTIONS, createIfMissing: !mustExist, maxOpenFiles: limits.maxOpenFiles };
    const db = new Level<Bytes, Bytes>(paths.chain, dbOptions);
    const blocksDb = new Level<Bytes, Bytes>(paths.blocks, dbOptions);
    try {
      // Blocks first, so that a chain database never exists without its blocks database.
      await blocksDb.open();
      await db.open();
    } catch (e) {
      await blocksDb.close().catch(() => {});
      throw StoreError.fromOpen(path, e);
    }
    try {
      const tables = {
        commits: openTable(db, "commits"),
        certifiers: openTable(db, "certifiers"),
        committees: openTable(db, "committees"),
        epochEnds: openTable(db, "epoch_ends"),
        meta: openTable(db, "meta"),
        peers: openTable(db, "peers"),
      };
      const storedGenesis = await tables.meta.get(utf8.encode(META.genesis));
      if (storedGenesis === undefined) {
        if (options.genesis === undefined)
          throw new StoreError("not_initialized", `store ${path} has no genesis: it was never initialized`);
        const genesis = parseGenesis(options.genesis);
        const cp = options.checkpoint;
        const marks: Watermarks =
          cp === undefined
            ? {
                highestVerified: 0,
                highestSynced: 0,
                highestSyncedDigest: genesis.digest,
                epoch: 0,
                lowestAvailable: 1,
              }
            : {
                highestVerified: cp.index,
                highestSynced: cp.index,
                highestSyncedDigest: cp.digest,
                epoch: Number(cp.committee.epoch),
                lowestAvailable: cp.index + 1,
              };
        const committee = cp?.committee ?? genesis.genesis.committee!;
        if (cp !== undefined) new CommitteeView(committee); // sanity-check a checkpoint's committee before storing it
        await db.batch([
          { type: "put", sublevel: tables.meta, key: utf8.encode(META.genesis), value: options.genesis },
          {
            type: "put",
            sublevel: tables.committees,
            key: indexKey(marks.epoch),
            value: toBinary(CommitteeSchema, committee),
          },
          {
            type: "put",
            sublevel: tables.meta,
            key: utf8.encode(META.watermarks),
            value: encodeWatermarks(marks),
          },
        ]);
        return new Store(path, db, blocksDb, tables, genesis, marks, [], limits);
      }
      if (options.genesis !== undefined && !bytesEqual(storedGenesis, options.genesis)) {
        const theirs = parseGenesis(options.genesis);
        const ours = parseGenesis(storedGenesis);
        throw new StoreError(
          "foreign_genesis",
          `store ${path} belongs to chain "${ours.genesis.chainId}" (genesis ${shortHex(ours.digest)}), not "${theirs.genesis.chainId}" (genesis ${shortHex(theirs.digest)})`,
        );
      }
      const marksBytes = await tables.meta.get(utf8.encode(META.watermarks));
      if (marksBytes === undefined || marksBytes.length !== 64)
        throw new StoreError("corrupt", `store ${path}: watermarks are missing or damaged`);
      const epochEnds: { epoch: number; end: number }[] = [];
      for await (const [key, value] of tables.epochEnds.iterator())
        epochEnds.push({ epoch: readIndexKey(key), end: readIndexKey(value) });
      return new Store(
        path,
        db,
        blocksDb,
        tables,
        parseGenesis(storedGenesis),
        decodeWatermarks(marksBytes),
        epochEnds,
        limits,
      );
    } catch (e) {
      await db.close().catch(() => {});
      await blocksDb.close().catch(() => {});
      if (e instanceof StoreError) throw e;
      throw new StoreError(
        "corrupt",
        `store ${path} cannot be read: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
  }

  get watermarks(): Watermarks {
    return this.marks;
  }

  /**
   * Writes verified commits, each a complete unit, in one atomic batch, and moves the watermarks.
   * Units must continue the chain: the caller has verified links and certification.
   */
  async apply(units: readonly ApplyUnit[]): Promise<void> {
    if (units.length === 0) return;
    // Order first: a refused apply changes nothing, not even the remembered certifier entries.
    units.forEach((unit, i) => {
      const at = this.marks.highestSynced + i;
      if (unit.index !== at + 1)
        throw new StoreError("out_of_order", `apply commit ${unit.index}: the store is at ${at}`);
    });
    const ops: BatchOp[] = [];
    const blockOps: BlockOp[] = units.flatMap((unit) =>
      unit.blocks.map((b) => ({ type: "put" as const, key: blockKey(b.ref), value: b.bytes })),
    );
    let marks = this.marks;
    const ended: { epoch: number; end: number }[] = [];
    // The blocks this apply stores, for certifier entries to refer to: only when there are any.
    const certifying = this.certifierRefs.size > 0 || units.some((u) => (u.certifierBlocks?.length ?? 0) > 0);
    const stored = new Set<string>(certifying ? blockOps.map((o) => keyId(o.key)) : []);
    for (const { index, slots } of this.certifierRefs.resolve(stored))
      ops.push({
        type: "put",
        sublevel: this.tables.certifiers,
        key: indexKey(index),
        value: encodeCertifiers(slots),
      });
    for (const unit of units) {
      const { tables } = this;
      ops.push({ type: "put", sublevel: tables.commits, key: indexKey(unit.index), value: unit.commitBytes });
      if (unit.certifierBlocks !== undefined && unit.certifierBlocks.length > 0)
        ops.push({
          type: "put",
          sublevel: tables.certifiers,
          key: indexKey(unit.index),
          value: encodeCertifiers(this.certifierRefs.slotsFor(unit.index, unit.certifierBlocks, stored)),
        });
      let epoch = marks.epoch;
      if (unit.nextCommittee !== undefined) {
        ops.push({
          type: "put",
          sublevel: tables.epochEnds,
          key: indexKey(unit.epoch),
          value: indexKey(unit.index),
        });
        ops.push({
          type: "put",
          sublevel: tables.committees,
          key: indexKey(unit.epoch + 1),
          value: toBinary(CommitteeSchema, unit.nextCommittee),
        });
        epoch = unit.epoch + 1;
        ended.push({ epoch: unit.epoch, end: unit.index });
      }
      marks = {
        highestVerified: Math.max(marks.highestVerified, unit.index),
        highestSynced: unit.index,
        highestSyncedDigest: unit.commitDigest,
        epoch,
        lowestAvailable: marks.lowestAvailable,
      };
    }
    // Blocks first: a commit at or below the watermark always has its blocks (module comment).
    if (blockOps.length > 0) await this.blocksDb.batch(blockOps);
    await this.writeWithMarks(ops, marks);
    this.epochEnds.push(...ended);
  }

  /**
   * The last index of the epoch that commit `index` belongs to, when that epoch has ended, and
   * the epoch itself. Commits above every known end belong to the current epoch.
   */
  epochBoundsOf(index: number): { epoch: number; end: number | undefined } {
    for (const e of this.epochEnds) if (e.end >= index) return { epoch: e.epoch, end: e.end };
    return { epoch: this.marks.epoch, end: undefined };
  }

  /** Records that commits up to `index` are verified (certified and linked) ahead of their blocks. */
  async setHighestVerified(index: number): Promise<void> {
    if (index <= this.marks.highestVerified) return;
    const marks = { ...this.marks, highestVerified: index };
    await this.tables.meta.put(utf8.encode(META.watermarks), encodeWatermarks(marks));
    this.marks = marks;
  }

  async getCommit(index: number): Promise<Bytes | undefined> {
    return this.tables.commits.get(indexKey(index));
  }

  /**
   * Commits in [start, end], in order, stopping at the first missing one, after `limit` commits,
   * or before the commit that would take their total size past `maxBytes` (one iterator).
   */
  async getCommits(
    start: number,
    end: number,
    limit = end - start + 1,
    maxBytes = Number.POSITIVE_INFINITY,
  ): Promise<Bytes[]> {
    const out: Bytes[] = [];
    const it = this.tables.commits.iterator({ gte: indexKey(start), lte: indexKey(end), limit });
    try {
      let expected = start;
      let bytes = 0;
      for (;;) {
        const entries = await it.nextv(Math.min(limit, 256));
        if (entries.length === 0) break;
        for (const [key, value] of entries) {
          if (readIndexKey(key) !== expected) return out;
          bytes += value.length;
          if (bytes > maxBytes) return out;
          out.push(value);
          expected++;
        }
      }
    } finally {
      await it.close();
    }
    return out;
  }

  /** Blocks by ref, in order; undefined where the store has none. */
  async getBlocks(refs: readonly BlockKeyRef[]): Promise<(Bytes | undefined)[]> {
    if (refs.length === 0) return [];
    return this.blocksDb.getMany(refs.map(blockKey));
  }

  async hasBlock(ref: BlockKeyRef): Promise<boolean> {
    return (await this.blocksDb.get(blockKey(ref))) !== undefined;
  }

  /** The certifier blocks stored for a commit, or undefined: by key from blocks/ where kept so. */
  async getCertifiers(index: number): Promise<Bytes[] | undefined> {
    const value = await this.tables.certifiers.get(indexKey(index));
    if (value === undefined) return undefined;
    const slots = decodeCertifiers(value);
    const byKey = slots.filter((s): s is CertifierSlot & { key: Bytes } => s.bytes === undefined);
    const read = byKey.length === 0 ? [] : await this.blocksDb.getMany(byKey.map((s) => s.key));
    let next = 0;
    return slots.map((s) => {
      if (s.bytes !== undefined) return s.bytes;
      const bytes = read[next++];
      if (bytes === undefined)
        throw new StoreError(
          "corrupt",
          `store ${this.path}: a certifier block of commit ${index} is missing from blocks/`,
        );
      return bytes;
    });
  }

  /** The highest commit in [from, to] whose certifier blocks are stored, or undefined. */
  async highestCertifiedIn(from: number, to: number): Promise<number | undefined> {
    const keys = await this.tables.certifiers
      .keys({ gte: indexKey(from), lte: indexKey(to), reverse: true, limit: 1 })
      .all();
    const key = keys[0];
    return key === undefined ? undefined : readIndexKey(key);
  }

  /**
   * The lowest commit in [from, to] whose certifier blocks are stored, or undefined: one seek of
   * one iterator over the certifier keys (limit 1), however far apart they are.
   */
  async lowestCertifiedIn(from: number, to: number): Promise<number | undefined> {
    const keys = await this.tables.certifiers
      .keys({ gte: indexKey(from), lte: indexKey(to), limit: 1 })
      .all();
    const key = keys[0];
    return key === undefined ? undefined : readIndexKey(key);
  }

  async getCommittee(epoch: number): Promise<CommitteeView | undefined> {
    const value = await this.tables.committees.get(indexKey(epoch));
    return value === undefined ? undefined : new CommitteeView(fromBinary(CommitteeSchema, value), epoch);
  }

  /** Index of the last commit of an epoch, when the store has seen its end. */
  async epochEnd(epoch: number): Promise<number | undefined> {
    const value = await this.tables.epochEnds.get(indexKey(epoch));
    return value === undefined ? undefined : readIndexKey(value);
  }

  /**
   * Deletes commits below `keepFrom` with their blocks and certifiers, moves the lowest available
   * watermark, and compacts what it deleted. Never prunes the highest synced commit. Works in
   * steps of `commitsPerBatch` commits (src/store/options.ts), so that memory and the work of one
   * step are bounded whatever the length of the history pruned. Each step first raises the
   * watermark (nothing below it is served any more), then deletes the blocks and compacts their
   * rounds, then deletes the commits and certifiers and compacts their indices: a crash at any
   * point leaves a consistent store, and the next prune finishes the step, since it starts from
   * the lowest commit still stored. (A crash after a step's commits are deleted and before they
   * are compacted leaves that one step's commit and certifier bytes to LevelDB's own compaction.)
   *
   * Why compact: LevelDB deletes by writing tombstones, and reclaims the space of a deleted key
   * only when a compaction rewrites the files holding it, which it starts only where it writes
   * again; nothing is written below the lowest kept commit, so without this a pruned store kept
   * its size (a 417 MB devnet store pruned to its last 1,224 of 20,000 commits: 417 MB after;
   * with compaction 25 MB, in ≈5 s). `compactRange` over a
   * step's key span rewrites the files overlapping it, at every level, dropping the deleted
   * entries and their tombstones.
   */
  async prune(keepFrom: number, options: Partial<PruneOptions> = {}): Promise<number> {
    const { commitsPerBatch, compact } = resolvePruneOptions(options);
    const target = Math.min(keepFrom, this.marks.highestSynced);
    let pruned = 0;
    for (;;) {
      const from = (await this.lowestStoredCommit()) ?? this.marks.lowestAvailable;
      if (from >= target) break;
      const to = Math.min(target - 1, from + commitsPerBatch - 1);
      if (this.marks.lowestAvailable <= to)
        await this.writeWithMarks([], { ...this.marks, lowestAvailable: to + 1 });
      this.certifierRefs.forgetBelow(to + 1);
      const ops: BatchOp[] = [];
      const blockOps: BlockOp[] = [];
      let lowestRound = Number.POSITIVE_INFINITY;
      let highestRound = -1;
      for (const bytes of await this.getCommits(from, to)) {
        const entry = parseCommit(bytes);
        ops.push({ type: "del", sublevel: this.tables.commits, key: indexKey(entry.index) });
        ops.push({ type: "del", sublevel: this.tables.certifiers, key: indexKey(entry.index) });
        for (const ref of entry.commit.blocks) {
          blockOps.push({ type: "del", key: blockKey(ref) });
          lowestRound = Math.min(lowestRound, ref.round);
          highestRound = Math.max(highestRound, ref.round);
        }
        pruned++;
      }
      await this.blocksDb.batch(blockOps);
      // Rounds [lowest, highest]: the span holds blocks of kept commits too (a commit may include
      // blocks older than its predecessor's), which compaction rewrites unchanged.
      if (compact && highestRound >= 0)
        await compactRange(this.blocksDb, roundStartKey(lowestRound), roundEndKey(highestRound));
      await this.db.batch(ops);
      if (compact)
        for (const table of [this.tables.commits, this.tables.certifiers]) {
          const prefix = utf8.encode(table.prefix);
          await compactRange(this.db, concat(prefix, indexKey(from)), concat(prefix, indexKey(to + 1)));
        }
    }
    return pruned;
  }

  /** The lowest commit index in the commits table (below the watermark while a prune is unfinished). */
  private async lowestStoredCommit(): Promise<number | undefined> {
    const keys = await this.tables.commits.keys({ limit: 1 }).all();
    const key = keys[0];
    return key === undefined ? undefined : readIndexKey(key);
  }

  /** Writes `ops` and the new watermarks in one atomic batch, then adopts them. */
  private async writeWithMarks(ops: BatchOp[], marks: Watermarks): Promise<void> {
    ops.push({
      type: "put",
      sublevel: this.tables.meta,
      key: utf8.encode(META.watermarks),
      value: encodeWatermarks(marks),
    });
    await this.db.batch(ops);
    this.marks = marks;
  }

  /**
   * Replaces the stored known peer set (DESIGN §9) with `bytes`, atomically (one put): opaque
   * here, encoded and validated by src/discovery. Apart from the chain data and its watermarks.
   */
  async putKnownPeers(bytes: Bytes): Promise<void> {
    await this.tables.peers.put(utf8.encode(KNOWN_PEERS_KEY), bytes);
  }

  /** The stored known peer set, or undefined when none was stored. */
  async getKnownPeers(): Promise<Bytes | undefined> {
    return this.tables.peers.get(utf8.encode(KNOWN_PEERS_KEY));
  }

  async close(): Promise<void> {
    await Promise.all([this.db.close(), this.blocksDb.close()]);
  }
}
