/**
 * The verified output: committed sub-DAGs, in order, to any number of subscribers. The engine
 * hands each applied batch to `publish`; the replay-then-follow loop, its bounds and its errors
 * are the store's SubDagFeed (src/store/subscription.ts), shared with the server's
 * SubscribeCommits, so the in-process and remote paths fail alike (pruned start → out_of_range,
 * missing data → not_found, lagging → SubscriberLagError).
 */
import { type Store, SubDagFeed } from "../store/index.js";

export { SubscriberLagError, SubscriptionError } from "../core/index.js";
export type { CommittedSubDagView } from "../store/index.js";

export class SubDagBroadcast extends SubDagFeed {
  constructor(store: Store, bufferCommits: number) {
    super(store, { bufferCommits });
  }
}
