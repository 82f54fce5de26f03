export * from "./discovery.js";
export * from "./options.js";
export * from "./peer-book.js";
export * from "./persist.js";
