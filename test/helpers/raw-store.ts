/**
 * A closed store's two LevelDB databases (src/store: chain/ and blocks/), opened directly, for
 * tests that check what is on disk beyond what the Store API shows.
 */
import { Level } from "level";
import { storeDatabases } from "../../src/store/index.js";

export type RawDb = Level<Uint8Array, Uint8Array>;

/** Opens both databases of the store at `path` (keys and values as bytes), runs `fn`, closes them. */
export async function withRawStore<T>(
  path: string,
  fn: (dbs: { chain: RawDb; blocks: RawDb }) => Promise<T>,
): Promise<T> {
  const paths = storeDatabases(path);
  const options = { keyEncoding: "view", valueEncoding: "view", createIfMissing: false } as const;
  const chain: RawDb = new Level(paths.chain, options);
  const blocks: RawDb = new Level(paths.blocks, options);
  try {
    await chain.open();
    await blocks.open();
    return await fn({ chain, blocks });
  } finally {
    await chain.close();
    await blocks.close();
  }
}

/** A chain-database key split into its sublevel (table) name and the key within it ("!name!" || key). */
export function splitTableKey(key: Uint8Array): { table: string; key: Uint8Array } | undefined {
  const end = key.indexOf(0x21, 1);
  if (key[0] !== 0x21 || end < 0) return undefined;
  return { table: Buffer.from(key.subarray(1, end)).toString("utf8"), key: key.subarray(end + 1) };
}
