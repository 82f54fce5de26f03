export * from "./blocker.js";
export * from "./dedup.js";
export * from "./frames.js";
export * from "./gossip-node.js";
export * from "./handshake.js";
export * from "./metrics.js";
export * from "./options.js";
export * from "./transport-limit.js";
