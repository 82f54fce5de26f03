/**
 * The gossip port: its own grpc-js server, separate from the sync port so that sync load never
 * delays live traffic, with reflection and health of its own.
 */
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { GOSSIP_SERVICE, type GossipNode } from "../gossip/index.js";
import { addReflection, Health } from "../server/index.js";

export interface TlsFiles {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca?: Buffer | undefined;
}

export async function startGossipServer(
  gossip: GossipNode,
  listen: string,
  tls?: TlsFiles | undefined,
): Promise<{ port: number; stop: () => Promise<void> }> {
  const server = new Server({
    // grpc-js ends a call whose message exceeds this limit by itself and only tells the handler
    // "cancelled", so GossipNode could never block the sender of an oversized frame. Headroom
    // lets frames up to twice the limit reach GossipNode, which blocks the sender (DESIGN.md §5);
    // anything bigger is still cut off by grpc-js (RESOURCE_EXHAUSTED, disconnected, unblocked).
    "grpc.max_receive_message_length": 2 * gossip.options.maxFrameBytes,
    "grpc.max_send_message_length": gossip.options.maxFrameBytes,
    "grpc.keepalive_time_ms": 15_000,
    "grpc.keepalive_permit_without_calls": 1,
  });
  server.addService(GOSSIP_SERVICE, { connect: gossip.connectHandler });
  const health = new Health(["dagsync.v1.Gossip"]);
  health.addToServer(server);
  addReflection(server, ["dagsync.v1.Gossip"]);
  const credentials =
    tls === undefined
      ? ServerCredentials.createInsecure()
      : ServerCredentials.createSsl(tls.ca ?? null, [{ cert_chain: tls.cert, private_key: tls.key }], false);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(listen, credentials, (error, p) => {
      if (error === null) return resolve(p);
      const taken = /EADDRINUSE|address already in use/i.test(error.message);
      reject(new Error(`--gossip-listen ${listen}: ${taken ? "the port is already in use" : error.message}`));
    });
  });
  health.setServing(true);
  return {
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        health.setServing(false);
        gossip.stop();
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2_000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
