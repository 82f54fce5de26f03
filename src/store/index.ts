export * from "./errors.js";
export * from "./keys.js";
export * from "./options.js";
export * from "./store.js";
export * from "./subscription.js";
