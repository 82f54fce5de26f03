export * from "./broadcast.js";
export * from "./engine.js";
export * from "./errors.js";
export * from "./metrics.js";
export * from "./network.js";
export * from "./options.js";
export * from "./peers.js";
export * from "./stall.js";
