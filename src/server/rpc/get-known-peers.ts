/**
 * StateSync/GetKnownPeers: peer exchange (DESIGN §9). Answers this node's signed info, when it
 * advertises, and at most `maxKnownPeersPerAnswer` (200) signed infos of peers it knows, from the
 * providers in deps.discovery (the server never imports discovery). The response is assembled
 * from the entries' bytes as received, never re-encoded. A caller's info is handed on unvalidated:
 * whoever receives it applies §9's rules. Rate-limited per remote address like every RPC.
 */
import { encodeRawFields } from "../../core/index.js";
import type { WireGetKnownPeersRequest } from "../../gen/dagsync/wire/v1/wire_pb.js";
import type { RpcContext } from "./context.js";
import { unary } from "./unary.js";

export function getKnownPeers(ctx: RpcContext) {
  return unary(ctx, "getKnownPeers", "GetKnownPeers", async (req: WireGetKnownPeersRequest, peer) => {
    const { discovery, options } = ctx.deps;
    if (req.caller.length > 0)
      try {
        discovery?.onCaller?.(peer, req.caller);
      } catch (e) {
        // the listener's bookkeeping failing is no reason to refuse the caller its answer
        ctx.deps.log.warn({ err: e, peer }, "GetKnownPeers: the caller's info could not be recorded");
      }
    const self = discovery?.self?.();
    const limit = options.maxKnownPeersPerAnswer;
    const peers = (discovery?.peers?.(limit) ?? []).slice(0, limit).filter((p) => p.length > 0);
    return encodeRawFields([
      [1, self === undefined || self.length === 0 ? [] : [self]],
      [2, peers],
    ]);
  });
}
