export * from "./key-file.js";
export * from "./keys.js";
export * from "./verifier.js";
