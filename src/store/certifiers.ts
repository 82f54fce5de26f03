/**
 * How the store keeps each certified commit's certifier blocks (proto/dagsync/store/v1/store.proto).
 *
 * A certifier block is a block of a round after the commit's leader: the next commits usually
 * store it in blocks/ as an ordinary block. Kept as bytes, a validator's chain/ held every vote
 * round a second time (206 MB of chain/ beside 234 MB of blocks/ for 22,224 devnet commits). So
 * a certifier is kept as its key into blocks/ where blocks/ holds it, and as bytes only where it
 * does not (yet): the vote round that closes an epoch is never committed, and a syncing node
 * stores a batch's certifiers before the blocks of the next batch. Entries still holding bytes
 * are remembered (`CertifierRefs`, bounded) and rewritten as keys when a later apply stores
 * their blocks.
 *
 * Why a key is safe: blocks are written before the chain batch that refers to them (the store's
 * order), and pruning never deletes a block a kept certifier refers to: a certifier of commit N
 * is of a round above N's leader, so only commits after N include it, and pruning keeps every
 * commit from its first kept one on.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { parseSignedBlock } from "../core/index.js";
import {
  type StoredCertifier,
  StoredCertifierSchema,
  StoredCertifiersSchema,
} from "../gen/dagsync/store/v1/store_pb.js";
import { blockKey } from "./keys.js";

type Bytes = Uint8Array;

/** One certifier: its key in blocks/ always, and its bytes while blocks/ does not hold it. */
export interface CertifierSlot {
  readonly key: Bytes | undefined;
  readonly bytes: Bytes | undefined;
}

/** A stored certifier value, decoded: the slots in order. */
export function decodeCertifiers(value: Bytes): CertifierSlot[] {
  const stored = fromBinary(StoredCertifiersSchema, value);
  if (stored.blocks.length > 0) return stored.blocks.map((bytes) => ({ key: undefined, bytes }));
  return stored.certifiers.map((c) =>
    c.location.case === "blockKey"
      ? { key: c.location.value, bytes: undefined }
      : { key: undefined, bytes: c.location.case === "block" ? c.location.value : new Uint8Array(0) },
  );
}

export function encodeCertifiers(slots: readonly CertifierSlot[]): Bytes {
  const certifiers: StoredCertifier[] = slots.map((s) =>
    create(StoredCertifierSchema, {
      location:
        s.bytes === undefined ? { case: "blockKey", value: s.key! } : { case: "block", value: s.bytes },
    }),
  );
  return toBinary(StoredCertifiersSchema, create(StoredCertifiersSchema, { certifiers }));
}

/** The blocks/ key of an encoded SignedBlock, or undefined when it does not parse. */
export function certifierKey(bytes: Bytes): Bytes | undefined {
  try {
    const b = parseSignedBlock(bytes);
    return blockKey({ round: b.round, author: b.author, digest: b.digest });
  } catch {
    return undefined; // verified before it reaches the store; kept as bytes if it ever does not parse
  }
}

/** A map key for a blocks/ key. */
export const keyId = (key: Bytes): string =>
  Buffer.from(key.buffer, key.byteOffset, key.length).toString("latin1");

/**
 * Certifier entries that still hold bytes of blocks blocks/ may store later, by commit index,
 * oldest first; at most `limit` (the oldest is forgotten and keeps its bytes).
 */
export class CertifierRefs {
  private readonly pending = new Map<number, CertifierSlot[]>();

  constructor(private readonly limit: number) {}

  get size(): number {
    return this.pending.size;
  }

  /**
   * The slots of a new entry for `certifiers`: a key where `stored` (the blocks written with it)
   * holds the block, bytes otherwise; an entry with bytes left is remembered.
   */
  slotsFor(index: number, certifiers: readonly Bytes[], stored: ReadonlySet<string>): CertifierSlot[] {
    const slots = certifiers.map((bytes): CertifierSlot => {
      const key = certifierKey(bytes);
      return key !== undefined && stored.has(keyId(key)) ? { key, bytes: undefined } : { key, bytes };
    });
    if (slots.some((s) => s.bytes !== undefined && s.key !== undefined)) this.remember(index, slots);
    return slots;
  }

  /**
   * Entries of earlier applies that `stored` (the blocks of this apply) lets hold keys instead of
   * bytes, rewritten: what the caller puts with the commit batch that follows these blocks.
   */
  resolve(stored: ReadonlySet<string>): { index: number; slots: CertifierSlot[] }[] {
    const out: { index: number; slots: CertifierSlot[] }[] = [];
    if (stored.size === 0) return out;
    for (const [index, slots] of this.pending) {
      let changed = false;
      const next = slots.map((s): CertifierSlot => {
        if (s.bytes === undefined || s.key === undefined || !stored.has(keyId(s.key))) return s;
        changed = true;
        return { key: s.key, bytes: undefined };
      });
      if (!changed) continue;
      out.push({ index, slots: next });
      if (next.some((s) => s.bytes !== undefined && s.key !== undefined)) this.pending.set(index, next);
      else this.pending.delete(index);
    }
    return out;
  }

  /** Forgets entries below `index` (pruned: rewriting them would bring them back). */
  forgetBelow(index: number): void {
    for (const i of this.pending.keys()) if (i < index) this.pending.delete(i);
  }

  private remember(index: number, slots: CertifierSlot[]): void {
    this.pending.set(index, slots);
    if (this.pending.size > this.limit) {
      const oldest = this.pending.keys().next().value;
      if (oldest !== undefined) this.pending.delete(oldest);
    }
  }
}
