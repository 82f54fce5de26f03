/** Child process for the raw gRPC stream bound: streams N MiB of 1 MiB messages per call. */
import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";

const chunk = randomBytes(1024 * 1024);
const server = new grpc.Server({ "grpc.max_send_message_length": 64 * 1024 * 1024 });
server.addService(
  {
    stream: {
      path: "/bench.Raw/Stream",
      requestStream: false,
      responseStream: true,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    },
  },
  {
    stream: async (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const total = Number(String(call.request));
      for (let i = 0; i < total; i++) {
        if (!call.write(chunk)) await new Promise((r) => call.once("drain", r));
      }
      call.end();
    },
  },
);
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  process.stdout.write(`${port}\n`);
});
