export * from "./key-file.js";
export * from "./keys.js";
export * from "./node-info.js";
export * from "./verifier.js";
export * from "./verify-pool.js";
