/**
 * Preloaded into every test process by scripts/test.mjs: once the event loop drains, the process
 * ends with process.exit() (the exit code the test runner set) instead of Node's natural exit,
 * whose cleanup was seen spinning at 100 % CPU for good in a test file's process after its tests
 * passed (test/net/hang-watch.ts has the evidence). Nothing is cut short: a drained loop has no
 * work left.
 */
process.once("beforeExit", () => process.exit());
