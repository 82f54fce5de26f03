export * from "./format.js";
export { isHttpLocation } from "./location.js";
export * from "./reader.js";
export * from "./reader-options.js";
