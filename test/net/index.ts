/** The network emulation layer for multi-process tests: see links.ts, link-proxy.ts, connect-relay.ts. */
export * from "./connect-relay.js";
export * from "./link-proxy.js";
export * from "./links.js";
