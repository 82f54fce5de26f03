/**
 * The gossip port: its own grpc-js server, separate from the sync port so that sync load never
 * delays live traffic, with reflection and health of its own.
 */
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { GOSSIP_SERVICE, type GossipNode, transportReceiveLimit } from "../gossip/index.js";
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
    // A frame over maxFrameBytes blocks its sender (DESIGN.md §5). Up to this limit GossipNode
    // reads it and blocks; over it grpc-js cuts the frame off, and the interceptor lets
    // GossipNode block the sender all the same (src/gossip/transport-limit.ts).
    "grpc.max_receive_message_length": transportReceiveLimit(gossip.options),
    interceptors: [gossip.serverInterceptor],
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
