export * from "./errors.js";
export * from "./options.js";
export * from "./peer-client.js";
export * from "./subscribe-verified.js";
