export * from "./codec.js";
export * from "./errors.js";
export * from "./metrics.js";
export * from "./options.js";
export * from "./rate-limit.js";
export * from "./reflection.js";
export * from "./server.js";
export * from "./state-sync.js";
