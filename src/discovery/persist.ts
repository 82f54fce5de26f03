/**
 * The known set in the store (DESIGN §9: a restart does not forget its peers): one atomic put of
 * the serialized set (PeerBook.toStored) in the store's `peers` table, and its reload.
 */
import type { Store } from "../store/index.js";
import type { PeerBook } from "./peer-book.js";

export async function savePeerBook(book: PeerBook, store: Store): Promise<void> {
  await store.putKnownPeers(book.toStored());
}

/** Adds the stored peers to `book`; returns how many records were loaded (0 when none stored). */
export async function loadPeerBook(book: PeerBook, store: Store, nowMs: number): Promise<number> {
  const bytes = await store.getKnownPeers();
  return bytes === undefined ? 0 : book.loadStored(bytes, nowMs);
}
