/** `dagsync status`: a node's Admin/GetStatus as JSON. */
import { toJsonString } from "@bufbuild/protobuf";
import type { Command } from "commander";
import { PeerClient } from "../../client/index.js";
import { GetStatusResponseSchema } from "../../gen/dagsync/v1/admin_pb.js";
import { hostPort } from "../options.js";

/** Adds the command to `program`; returns it. */
export function addStatus(program: Command): Command {
  return program
    .command("status")
    .description("print a node's Admin/GetStatus")
    .argument("<host:port>", "the node's sync address")
    .action(async (address: string) => {
      hostPort(address);
      const client = new PeerClient(address);
      try {
        const s = await client.getStatus();
        console.log(toJsonString(GetStatusResponseSchema, s, { prettySpaces: 2 }));
        // For people: each peer with its source, on stderr (stdout stays JSON for tools).
        for (const p of s.peers)
          console.error(
            `peer ${p.address.padEnd(21)}  source=${(p.source || "?").padEnd(9)}  ${p.working ? "working" : "known  "}  highest=${p.highest}`,
          );
      } finally {
        client.close();
      }
    });
}
