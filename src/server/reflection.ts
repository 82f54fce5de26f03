/**
 * Server reflection (v1 and v1alpha) and health. @grpc/reflection fed through proto-loader merges
 * multi-file packages badly (DESIGN.md §8), and proto-loader's copy of the health proto has
 * relative type names that buf curl rejects, so it gets the per-file FileDescriptorProto bytes of
 * `buf build` (src/gen/dagsync.binpb, comments included, so `grpcurl describe` shows them), which
 * include a vendored copy of the standard health proto.
 */
import { readFileSync } from "node:fs";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import type { Server } from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";

/** The public schema: internal wire twins are not part of it. */
const PUBLIC_FILE_PREFIXES = ["dagsync/v1/", "grpc/health/v1/"];

export const SERVICE_NAMES = ["dagsync.v1.StateSync", "dagsync.v1.Admin"] as const;

export function dagsyncFileDescriptors(): Buffer[] {
  const set = fromBinary(
    FileDescriptorSetSchema,
    readFileSync(new URL("../gen/dagsync.binpb", import.meta.url)),
  );
  return set.file
    .filter((f) => PUBLIC_FILE_PREFIXES.some((p) => f.name.startsWith(p)))
    .map((f) => Buffer.from(toBinary(FileDescriptorProtoSchema, f)));
}

/** Adds reflection listing `services` (and health) to the server. */
export function addReflection(server: Server, services: readonly string[]): void {
  const files = dagsyncFileDescriptors();
  new ReflectionService({ dagsync: { fileDescriptorProtos: files } } as never, {
    services: [...services, "grpc.health.v1.Health"],
  }).addToServer(server);
}

/** Health: NOT_SERVING until `setServing(true)`, and again while draining. */
export class Health {
  private readonly impl = new HealthImplementation({ "": "NOT_SERVING" });

  constructor(private readonly services: readonly string[]) {
    for (const s of services) this.impl.setStatus(s, "NOT_SERVING");
  }

  addToServer(server: Server): void {
    this.impl.addToServer(server);
  }

  setServing(serving: boolean): void {
    const status = serving ? "SERVING" : "NOT_SERVING";
    this.impl.setStatus("", status);
    for (const s of this.services) this.impl.setStatus(s, status);
  }
}
