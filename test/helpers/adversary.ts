/**
 * Hostile sync peers for the end-to-end adversarial tests: real grpc-js servers on loopback that
 * serve a real store through the honest StateSyncHandlers, but alter one thing in what they send
 * (tampered block bytes, a broken previous_digest, forged / too few / wrong-epoch certifier votes,
 * an oversized response, a stall, a height lie). Each counts the calls it received and the
 * responses it corrupted, so that a test can tell that a corruption was really served.
 *
 * A peer may start "dormant": it then advertises an empty store (highest 0, like a validator that
 * is still restoring), so that a node never picks it, until `activate()`. That lets a test decide
 * which peers a node can use at each moment, and so which one it must ask.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type handleUnaryCall,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type sendUnaryData,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { Registry } from "prom-client";
import { blockSigningMessage, encodeRawFields, parseCommit, parseSignedBlock } from "../../src/core/index.js";
import type { Ed25519Signer } from "../../src/crypto/keys.js";
import { GetCommitAvailabilityResponseSchema } from "../../src/gen/dagsync/v1/sync_pb.js";
import { BlockSchema, CommitSchema } from "../../src/gen/dagsync/v1/types_pb.js";
import {
  WireFetchBlocksResponseSchema,
  WireFetchCommitsResponseSchema,
} from "../../src/gen/dagsync/wire/v1/wire_pb.js";
import { silentLogger } from "../../src/node/logger.js";
import {
  ADMIN_SERVICE,
  type Decoded,
  type RawResponse,
  resolveServerOptions,
  ServerMetrics,
  STATE_SYNC_SERVICE,
  StateSyncHandlers,
} from "../../src/server/index.js";
import type { Store } from "../../src/store/index.js";

/** What a peer alters; "none" is an honest peer. */
export type Corruption =
  /** FetchBlocks: one byte of the last block of every response flipped. */
  | "tampered_blocks"
  /**
   * FetchCommits: the previous_digest of a commit in the middle of the batch changed, with the
   * (genuine) certifier blocks of the commit just before the break, so that the prefix up to the
   * break is certified and only the link is wrong.
   */
  | "broken_link"
  /** FetchCommits: one certifier block's signature altered. */
  | "forged_votes"
  /** FetchCommits: certifier blocks dropped until their stake is just below a quorum. */
  | "few_votes"
  /**
   * FetchCommits: the certifier blocks re-made in another epoch (epoch − 1, or + 1 for epoch 0),
   * voting for the right commit and validly signed by that epoch's key of their author.
   */
  | "wrong_epoch_votes"
  /** FetchCommits: the honest response padded with an unknown field past `oversizeBytes`. */
  | "oversized"
  /** FetchCommits and FetchBlocks are never answered. */
  | "stall"
  /** GetCommitAvailability advertises `heightLie` commits more than the store holds. */
  | "height_lie"
  | "none";

export type Method =
  | "GetCommitAvailability"
  | "FetchCommits"
  | "FetchBlocks"
  | "PushCommit"
  | "SubscribeCommits"
  | "GetKnownPeers"
  | "GetStatus";

/** Per epoch, by author index: the protocol keys of that epoch's committee (DevnetChain.keysByEpoch). */
export type KeysByEpoch = ReadonlyMap<number, readonly { readonly protocol: Ed25519Signer }[]>;

export interface AdversaryConfig {
  /** The store served (read-only); several adversaries may share one. */
  readonly store: Store;
  readonly corruption: Corruption;
  /** Advertise an empty store until `activate()`. Default false. */
  readonly dormant?: boolean | undefined;
  /** Signing keys, for "wrong_epoch_votes". */
  readonly keys?: KeysByEpoch | undefined;
  /** Extra commits advertised by "height_lie". Default 500. */
  readonly heightLie?: number | undefined;
  /** Size "oversized" pads a response to, bytes. Default 17 MiB (the client reads at most 16 MiB). */
  readonly oversizeBytes?: number | undefined;
  /**
   * GetKnownPeers answers exactly these encoded SignedNodeInfo entries, however many (an honest
   * server sends at most 200), whatever the corruption. Default: the honest, empty answer.
   */
  readonly knownPeers?: (() => readonly Uint8Array[]) | undefined;
}

export interface AdversaryStats {
  /** Calls received, by method. */
  readonly calls: Record<Method, number>;
  /** Responses altered (or, for "stall", calls held). */
  corrupted: number;
  /** Held calls that the client gave up on (deadline or cancel). */
  stallsCancelled: number;
}

type Callback = sendUnaryData<RawResponse>;
type UnaryHandler = handleUnaryCall<Decoded<unknown>, RawResponse>;

/** An honest handler's answer as bytes (FetchBlocks hands over its fields, encoded at sending). */
const answerBytes = (r: RawResponse): Uint8Array => (r instanceof Uint8Array ? r : encodeRawFields(r.fields));
/** A response as sent, and whether it differs from the honest one. */
type Altered = { readonly bytes: Uint8Array; readonly corrupt: boolean };
const honestly = async (bytes: Uint8Array): Promise<Altered> => ({ bytes, corrupt: false });
const corrupted = (bytes: Uint8Array): Altered => ({ bytes, corrupt: true });

/** A byte-flipped copy. */
function flip(bytes: Uint8Array, at: number): Uint8Array {
  const copy = bytes.slice();
  copy[at] = (copy[at] ?? 0) ^ 0x5a;
  return copy;
}

export class Adversary {
  readonly stats: AdversaryStats = {
    calls: {
      GetCommitAvailability: 0,
      FetchCommits: 0,
      FetchBlocks: 0,
      PushCommit: 0,
      SubscribeCommits: 0,
      GetKnownPeers: 0,
      GetStatus: 0,
    },
    corrupted: 0,
    stallsCancelled: 0,
  };
  private active: boolean;
  private readonly server: Server;
  private readonly honest: StateSyncHandlers;
  private readonly held = new Set<ServerUnaryCall<unknown, RawResponse>>();
  private boundPort: number | undefined;

  constructor(readonly config: AdversaryConfig) {
    this.active = config.dormant !== true;
    const options = resolveServerOptions({
      // Generous quotas: these peers are judged on what they send, never on rate limits.
      rateLimits: {
        getCommitAvailability: { perSecond: 1000, burst: 1000 },
        fetchCommits: { perSecond: 1000, burst: 1000 },
        fetchBlocks: { perSecond: 1000, burst: 1000 },
        pushCommit: { perSecond: 1000, burst: 1000 },
      },
      maxInflightPerPeer: 64,
    });
    this.honest = new StateSyncHandlers({
      store: config.store,
      options,
      metrics: new ServerMetrics(new Registry()),
      log: silentLogger(),
    });
    this.server = new Server({
      "grpc.max_receive_message_length": 4 * 1024 * 1024,
      "grpc.max_send_message_length": -1,
    });
    const h = this.honest;
    const impl = {
      getCommitAvailability: this.wrap(
        "GetCommitAvailability",
        h.getCommitAvailability as UnaryHandler,
        (b) => this.availability(b),
      ),
      fetchCommits:
        config.corruption === "stall"
          ? this.stall("FetchCommits")
          : this.wrap("FetchCommits", h.fetchCommits as UnaryHandler, (b) => this.commits(b)),
      fetchBlocks:
        config.corruption === "stall"
          ? this.stall("FetchBlocks")
          : this.wrap("FetchBlocks", h.fetchBlocks as UnaryHandler, async (b) => this.blocks(b)),
      pushCommit: this.wrap("PushCommit", h.pushCommit as UnaryHandler, honestly),
      // No discovery deps: an honest, empty answer, unless the config gives the entries.
      getKnownPeers: this.wrap("GetKnownPeers", h.getKnownPeers as UnaryHandler, async (b) => {
        const entries = config.knownPeers;
        return entries === undefined
          ? { bytes: b, corrupt: false }
          : corrupted(encodeRawFields([[2, entries()]]));
      }),
      subscribeCommits: (...args: Parameters<StateSyncHandlers["subscribeCommits"]>) => {
        this.stats.calls.SubscribeCommits++;
        h.subscribeCommits(...args);
      },
    };
    this.server.addService(STATE_SYNC_SERVICE, impl as unknown as UntypedServiceImplementation);
    this.server.addService(ADMIN_SERVICE, {
      getStatus: this.wrap("GetStatus", h.getStatus as UnaryHandler, honestly),
    } as unknown as UntypedServiceImplementation);
  }

  get corruption(): Corruption {
    return this.config.corruption;
  }

  get port(): number {
    if (this.boundPort === undefined) throw new Error("adversary not started");
    return this.boundPort;
  }

  /** "127.0.0.1:PORT" */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get isActive(): boolean {
    return this.active;
  }

  /** From now on advertise what the store holds (the corruption applies from the start anyway). */
  activate(): void {
    this.active = true;
  }

  async start(): Promise<void> {
    this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) =>
        error === null ? resolve(port) : reject(error),
      );
    });
  }

  /** Stops at once: held calls and calls in flight are cut. */
  async stop(): Promise<void> {
    this.held.clear();
    this.server.forceShutdown();
  }

  /** Runs the honest handler, then alters its successful response. */
  private wrap(
    method: Method,
    handler: UnaryHandler,
    alter: (bytes: Uint8Array) => Promise<Altered>,
  ): UnaryHandler {
    return (call: ServerUnaryCall<Decoded<unknown>, RawResponse>, callback: Callback) => {
      this.stats.calls[method]++;
      handler(call, (error, bytes) => {
        if (error !== null && error !== undefined) {
          callback(error);
          return;
        }
        alter(answerBytes(bytes!)).then(
          (altered) => {
            // Counted when sent to a client still waiting (one that gave up would never judge it).
            if (altered.corrupt && !call.cancelled) this.stats.corrupted++;
            callback(null, altered.bytes);
          },
          (e: unknown) => callback({ code: 13, details: `adversary failed: ${String(e)}` }),
        );
      });
    };
  }

  private stall(method: Method): UnaryHandler {
    return (call: ServerUnaryCall<Decoded<unknown>, RawResponse>) => {
      this.stats.calls[method]++;
      this.stats.corrupted++;
      this.held.add(call);
      call.on("cancelled", () => {
        if (this.held.delete(call)) this.stats.stallsCancelled++;
      });
    };
  }

  private async availability(bytes: Uint8Array): Promise<Altered> {
    const m = fromBinary(GetCommitAvailabilityResponseSchema, bytes);
    if (!this.active) {
      // Dormant: an empty store of the same chain (what a restoring validator says).
      m.highestSyncedCommit = 0n;
      m.lowestAvailableCommit = 1n;
      m.epoch = 0n;
      m.highestCommitDigest = this.config.store.genesis.digest;
      return { bytes: toBinary(GetCommitAvailabilityResponseSchema, m), corrupt: false };
    }
    if (this.config.corruption !== "height_lie") return { bytes, corrupt: false };
    m.highestSyncedCommit += BigInt(this.config.heightLie ?? 500);
    return corrupted(toBinary(GetCommitAvailabilityResponseSchema, m));
  }

  private async commits(bytes: Uint8Array): Promise<Altered> {
    const c = this.config.corruption;
    const res = fromBinary(WireFetchCommitsResponseSchema, bytes);
    const { commits } = res;
    switch (c) {
      case "broken_link": {
        const k = Math.floor(commits.length / 2);
        const entry = parseCommit(commits[k]!);
        const commit = fromBinary(CommitSchema, commits[k]!);
        commit.previousDigest = flip(commit.previousDigest, 0);
        commits[k] = toBinary(CommitSchema, commit);
        if (k > 0) {
          const certifiers = await this.config.store.getCertifiers(entry.index - 1);
          if (certifiers === undefined) throw new Error(`no certifiers stored for ${entry.index - 1}`);
          res.certifierBlocks = certifiers;
        }
        break;
      }
      case "forged_votes": {
        const first = res.certifierBlocks[0]!;
        res.certifierBlocks[0] = flip(first, first.length - 1); // the signature's last byte
        break;
      }
      case "few_votes": {
        const epoch = parseCommit(commits[0]!).epoch;
        const committee = await this.config.store.getCommittee(epoch);
        if (committee === undefined) throw new Error(`no committee for epoch ${epoch}`);
        const kept: Uint8Array[] = [];
        let stake = 0;
        for (const b of res.certifierBlocks) {
          const s = committee.stakeOf(parseSignedBlock(b).author) ?? 0;
          if (committee.isQuorum(stake + s)) continue;
          kept.push(b);
          stake += s;
        }
        res.certifierBlocks = kept;
        break;
      }
      case "wrong_epoch_votes": {
        const keys = this.config.keys;
        if (keys === undefined) throw new Error("wrong_epoch_votes needs the devnet keys");
        res.certifierBlocks = res.certifierBlocks.map((b) => {
          const entry = parseSignedBlock(b);
          const other = entry.epoch > 0 ? entry.epoch - 1 : entry.epoch + 1;
          const signer = keys.get(other)?.[entry.author]?.protocol;
          if (signer === undefined) throw new Error(`no key of author ${entry.author} in epoch ${other}`);
          const block = fromBinary(BlockSchema, entry.blockBytes);
          block.epoch = BigInt(other);
          const blockBytes = toBinary(BlockSchema, block);
          const signature = signer.sign(
            blockSigningMessage(this.config.store.genesis.genesis.chainId, blockBytes),
          );
          return encodeRawFields([
            [1, [blockBytes]],
            [2, [signature]],
          ]);
        });
        break;
      }
      case "oversized": {
        const size = this.config.oversizeBytes ?? 17 * 1024 * 1024;
        // Field 15 (unknown to the schema) as padding: still a valid message, just too big.
        return corrupted(concat(bytes, encodeRawFields([[15, [new Uint8Array(size)]]])));
      }
      default:
        return { bytes, corrupt: false };
    }
    return corrupted(toBinary(WireFetchCommitsResponseSchema, res));
  }

  private blocks(bytes: Uint8Array): Altered {
    if (this.config.corruption !== "tampered_blocks") return { bytes, corrupt: false };
    const res = fromBinary(WireFetchBlocksResponseSchema, bytes);
    const last = res.blocks.length - 1;
    if (last < 0) return { bytes, corrupt: false };
    const block = res.blocks[last]!;
    res.blocks[last] = flip(block, Math.floor(block.length / 2));
    return corrupted(toBinary(WireFetchBlocksResponseSchema, res));
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** Starts an adversary on 127.0.0.1 with an OS-chosen port. */
export async function startAdversary(config: AdversaryConfig): Promise<Adversary> {
  const adversary = new Adversary(config);
  await adversary.start();
  return adversary;
}
