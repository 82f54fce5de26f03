/**
 * Writes a generated devnet to disk: keys, genesis.pb, one store per validator and devnet.json.
 *
 * Layout of DIR:
 *   genesis.pb                    encoded Genesis
 *   devnet.json                   summary: chain id, genesis digest, validators, counts, options
 *   devnet-state.json             the generator's state, for live continuation
 *   validator-<i>/protocol.key    key file (mode 0600) of the final committee
 *   validator-<i>/network.key
 *   validator-<i>/store/          LevelDB store holding the whole chain
 */
import { cp, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { toHex } from "../core/bytes.js";
import { writeKeyFile } from "../crypto/key-file.js";
import { type ApplyUnit, STORE_LAYOUT, Store } from "../store/index.js";
import { DevnetChain, type DevnetOptions, validatorAddresses } from "./chain.js";

export interface DevnetSummary {
  readonly dir: string;
  readonly chainId: string;
  readonly genesisDigest: string;
  readonly genesisFile: string;
  readonly commits: number;
  readonly blocks: number;
  readonly blockBytes: number;
  /** Bytes of every commit, canonical (with blockBytes, the chain's bytes). */
  readonly commitBytes: number;
  readonly epochs: number;
  /** The store layout the validators' stores were written with (`STORE_LAYOUT`). */
  readonly storeLayout: number;
  readonly validators: {
    readonly index: number;
    readonly syncAddress: string;
    readonly gossipAddress: string;
    readonly store: string;
    readonly protocolKeyFile: string;
    readonly networkKeyFile: string;
  }[];
  readonly options: DevnetOptions;
}

export class DevnetError extends Error {
  override readonly name = "DevnetError";
}

export const DEVNET_STATE_FILE = "devnet-state.json";

/** Commits written per store batch while generating (each commit stays a whole unit). */
const WRITE_BATCH_COMMITS = 64;

export async function writeDevnet(dir: string, options: Partial<DevnetOptions> = {}): Promise<DevnetSummary> {
  const existing = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return [] as string[];
    throw new DevnetError(
      `--out ${dir}: ${e.code === "ENOTDIR" ? "is a file, not a directory" : `cannot be read (${e.code})`}`,
    );
  });
  if (existing.length > 0)
    throw new DevnetError(`--out ${dir} is not empty: choose a new directory or remove it first`);
  await mkdir(dir, { recursive: true });

  const chain = new DevnetChain(options);
  const genesisFile = join(dir, "genesis.pb");
  await writeFile(genesisFile, chain.genesis.bytes);

  const firstStore = join(dir, "validator-0", "store");
  await mkdir(join(dir, "validator-0"), { recursive: true });
  const store = await Store.open(firstStore, { genesis: chain.genesis.bytes });
  let commits = 0;
  let blocks = 0;
  let blockBytes = 0;
  let commitBytes = 0;
  try {
    let batch: ApplyUnit[] = [];
    for (const c of chain.commits()) {
      batch.push({
        index: c.index,
        epoch: c.epoch,
        commitBytes: c.commitBytes,
        commitDigest: c.commitDigest,
        blocks: c.blocks,
        certifierBlocks: c.certifierBlocks,
        nextCommittee: c.nextCommittee,
      });
      commits++;
      commitBytes += c.commitBytes.length;
      blocks += c.blocks.length;
      for (const b of c.blocks) blockBytes += b.bytes.length;
      if (batch.length >= WRITE_BATCH_COMMITS) {
        await store.apply(batch);
        batch = [];
      }
    }
    await store.apply(batch);
  } finally {
    await store.close();
  }

  const o = chain.options;
  const finalKeys = chain.keysByEpoch.get(o.epochs) ?? [];
  const validators: DevnetSummary["validators"][number][] = [];
  for (let i = 0; i < o.validators; i++) {
    const vdir = join(dir, `validator-${i}`);
    await mkdir(vdir, { recursive: true });
    const storePath = join(vdir, "store");
    if (i > 0) await cp(firstStore, storePath, { recursive: true });
    const keys = finalKeys[i]!;
    const protocolKeyFile = join(vdir, "protocol.key");
    const networkKeyFile = join(vdir, "network.key");
    await writeKeyFile(protocolKeyFile, keys.protocol);
    await writeKeyFile(networkKeyFile, keys.network);
    validators.push({
      index: i,
      ...validatorAddresses(o, o.epochs, i),
      store: storePath,
      protocolKeyFile,
      networkKeyFile,
    });
  }
  const summary: DevnetSummary = {
    dir,
    chainId: chain.chainId,
    genesisDigest: toHex(chain.genesis.digest),
    genesisFile,
    commits,
    blocks,
    blockBytes,
    commitBytes,
    epochs: o.epochs,
    storeLayout: STORE_LAYOUT,
    validators,
    options: o,
  };
  await writeFile(join(dir, "devnet.json"), `${JSON.stringify(summary, null, 2)}\n`);
  // Where the chain stands, so that live validators continue it (dagsync serve --live).
  await writeFile(join(dir, DEVNET_STATE_FILE), JSON.stringify(chain.snapshot()));
  return summary;
}

/**
 * The summary of the devnet in `dir`, when one was written there with the current store layout;
 * undefined when there is none or it is stale (the caller regenerates it).
 */
export async function readDevnetSummary(dir: string): Promise<DevnetSummary | undefined> {
  let summary: DevnetSummary;
  try {
    summary = JSON.parse(await readFile(join(dir, "devnet.json"), "utf8")) as DevnetSummary;
  } catch {
    return undefined;
  }
  return summary.storeLayout === STORE_LAYOUT ? summary : undefined;
}
