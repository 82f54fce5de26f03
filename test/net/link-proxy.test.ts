/**
 * The network emulation layer on real sockets: node a (127.0.0.11) is served by a LinkProxy in
 * front of a plain TCP server on 127.0.0.1; nodes b (127.0.0.12) and c (127.0.0.13) dial it from
 * their own addresses. Each test builds its own Network and proxy on free ports.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";
import { after, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { ConnectRelay, LinkProxy, Network, TokenBucket } from "./index.js";

const A = "127.0.0.11";
const B = "127.0.0.12";
const C = "127.0.0.13";

/** A hung socket wait fails its test quickly instead of stalling the suite. */
const LIMIT = { timeout: 15_000 };

const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function network(seed = "test"): Network {
  const net = new Network({ seed });
  net.addNode("a", A);
  net.addNode("b", B);
  net.addNode("c", C);
  return net;
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A TCP server on 127.0.0.1 running `handler` per connection; closed after the tests. */
async function server(handler: (s: Socket) => void): Promise<{ port: number; accepted: () => number }> {
  let accepted = 0;
  const sockets = new Set<Socket>();
  const srv: Server = createServer((s) => {
    accepted++;
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
    handler(s);
  });
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  cleanups.push(() => {
    for (const s of sockets) s.destroy();
    srv.close();
  });
  const addr = srv.address();
  assert.ok(addr && typeof addr === "object");
  return { port: addr.port, accepted: () => accepted };
}

const echoServer = () => server((s) => s.pipe(s));

/** A server that hashes what each connection sends and reports it on end. */
function sinkServer() {
  const received: { bytes: number; sha: string }[] = [];
  let live = 0;
  const srv = server((s) => {
    const h = createHash("sha256");
    let bytes = 0;
    s.on("data", (d: Buffer) => {
      h.update(d);
      bytes += d.length;
      live += d.length;
    });
    s.on("end", () => {
      received.push({ bytes, sha: h.digest("hex") });
      s.end();
    });
  });
  return srv.then((x) => ({ ...x, received, live: () => live }));
}

async function proxyFor(net: Network, targetPort: number, options: { highWaterBytes?: number } = {}) {
  const proxy = new LinkProxy({ network: net, node: "a", targetHost: "127.0.0.1", targetPort, ...options });
  const { port } = await proxy.listen();
  cleanups.push(() => proxy.close());
  return { proxy, port };
}

async function dial(port: number, localAddress: string, host = A): Promise<Socket> {
  const s = connect({ host, port, localAddress, noDelay: true });
  s.on("error", () => {});
  cleanups.push(() => s.destroy());
  await once(s, "connect");
  return s;
}

/** Resolves with the next `n` bytes read from `s`. */
function readBytes(s: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const onData = (d: Buffer) => {
      parts.push(d);
      got += d.length;
      if (got >= n) {
        s.off("data", onData);
        s.off("close", onClose);
        const all = Buffer.concat(parts);
        if (all.length > n) s.unshift(all.subarray(n));
        resolve(all.subarray(0, n));
      }
    };
    const onClose = () => reject(new Error(`closed after ${got} of ${n} bytes`));
    s.on("data", onData);
    s.on("close", onClose);
  });
}

/** Resolves on 'drain' or 'close', whichever comes first, leaving no listener behind. */
function drainOrClose(s: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      s.off("drain", done);
      s.off("close", done);
      resolve();
    };
    s.on("drain", done);
    s.on("close", done);
  });
}

/** Sends `total` bytes of `chunk` repeated, honouring backpressure, then ends; resolves when done. */
async function sendAll(s: Socket, chunk: Buffer, total: number, sent = { bytes: 0 }): Promise<void> {
  while (sent.bytes < total && !s.destroyed) {
    const piece = chunk.subarray(0, Math.min(chunk.length, total - sent.bytes));
    sent.bytes += piece.length;
    if (!s.write(piece)) await drainOrClose(s);
  }
  s.end();
}

/** Resolves with the error code that ended `s`, or "close" for a clean close. */
function closeOutcome(s: Socket): Promise<string> {
  return new Promise((resolve) => {
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"));
    s.once("close", () => resolve("close"));
  });
}

/** A port on 127.0.0.1 with nothing listening. */
function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once `cond()` holds, polling; rejects after `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test("bytes pass through unchanged both ways, and are counted per link", LIMIT, async () => {
  const net = network();
  const { port } = await proxyFor(net, (await echoServer()).port);
  const s = await dial(port, B);
  const data = randomBytes(1 << 20);
  const echoed = readBytes(s, data.length);
  s.write(data);
  assert.equal(sha(await echoed), sha(data));
  assert.equal(net.link("b", "a").bytesDelivered, data.length);
  assert.equal(net.link("a", "b").bytesDelivered, data.length);
  assert.equal(net.link("b", "a").connectionsOpened, 1);
});

test("latency adds to each direction; jitter never reorders", LIMIT, async () => {
  const net = network();
  net.setPair("a", "b", { latencyMs: 50 });
  const { port } = await proxyFor(net, (await echoServer()).port);
  const s = await dial(port, B);
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    const back = readBytes(s, 1);
    s.write("x");
    await back;
    const rtt = performance.now() - t0;
    assert.ok(rtt >= 100 && rtt < 300, `round trip ${rtt} ms`);
  }

  net.setPair("a", "b", { latencyMs: 5, jitterMs: 40 });
  const messages = Array.from({ length: 60 }, (_, i) => `<${i}:${"y".repeat(i)}>`);
  const expected = messages.join("");
  const back = readBytes(s, Buffer.byteLength(expected));
  const t0 = performance.now();
  for (const m of messages) {
    s.write(m);
    await sleep(2); // separate reads at the proxy, so each gets its own jitter draw
  }
  assert.equal((await back).toString(), expected);
  assert.ok(performance.now() - t0 >= 10, "jitter and latency were applied");
});

test(
  "bandwidth: a capped link takes its time; connections share it; other sources are not slowed",
  LIMIT,
  async (t) => {
    const net = network();
    net.setLink("b", "a", { bandwidthBytesPerSec: 1_000_000 });
    const sink = await sinkServer();
    const { port } = await proxyFor(net, sink.port);
    const chunk = randomBytes(64 * 1024);
    const timed = async (from: string, bytes: number) => {
      const s = await dial(port, from);
      const t0 = performance.now();
      const closed = once(s, "close");
      await sendAll(s, chunk, bytes);
      await closed; // the sink ends after it has read everything
      return (performance.now() - t0) / 1000;
    };

    const alone = await timed(B, 2_000_000);

    t.diagnostic(`2 MB alone: ${alone.toFixed(2)} s`);
    assert.ok(alone >= 1.6 && alone < 3, `2 MB at 1 MB/s took ${alone} s`);

    const [one, two, other] = await Promise.all([
      timed(B, 1_000_000),
      timed(B, 1_000_000),
      timed(C, 2_000_000),
    ]);
    const shared = Math.max(one, two);
    t.diagnostic(
      `2 × 1 MB shared: ${one.toFixed(2)} s, ${two.toFixed(2)} s; c unlimited: ${other.toFixed(2)} s`,
    );
    assert.ok(shared >= 1.6 && shared < 3, `2 × 1 MB on one 1 MB/s link took ${one} s and ${two} s`);
    assert.ok(Math.min(one, two) >= 1.2, `the bucket is shared (not 1 s each): ${one} s, ${two} s`);
    assert.ok(other < 0.8, `c's unlimited link took ${other} s`);
    assert.ok(sink.received.every((r) => r.bytes === 1_000_000 || r.bytes === 2_000_000));
    assert.equal(net.link("b", "a").bytesDelivered, 4_000_000);
  },
);

test("the destination sees each sender's own address, not the proxy's", LIMIT, async () => {
  const net = network();
  const seen: string[] = [];
  const { port } = await proxyFor(
    net,
    (
      await server((s) => {
        seen.push(s.remoteAddress ?? "");
        s.pipe(s);
      })
    ).port,
  );
  for (const from of [B, C]) {
    const s = await dial(port, from);
    const back = readBytes(s, 2);
    s.write("hi");
    await back;
  }
  assert.deepEqual(seen, [B, C]);
});

test("the source node is identified by the dialer's address", LIMIT, async () => {
  const net = network();
  net.setLink("b", "a", { latencyMs: 150 });
  const { port } = await proxyFor(net, (await echoServer()).port);
  const rtt = async (from: string) => {
    const s = await dial(port, from);
    const t0 = performance.now();
    const back = readBytes(s, 4);
    s.write("ping");
    await back;
    return performance.now() - t0;
  };
  const fromB = await rtt(B);
  const fromC = await rtt(C);
  const fromStranger = await rtt("127.0.0.14");
  assert.ok(fromB >= 150, `b→a has 150 ms: ${fromB}`);
  assert.ok(fromC < 50, `c→a is perfect: ${fromC}`);
  assert.ok(fromStranger < 50, `unknown→a uses the default: ${fromStranger}`);
  assert.equal(net.link("b", "a").connectionsOpened, 1);
  assert.equal(net.link("c", "a").connectionsOpened, 1);
  assert.equal(net.link("unknown", "a").connectionsOpened, 1);
});

test(
  "partition holds bytes and new connections until heal, then everything arrives intact",
  LIMIT,
  async () => {
    const net = network();
    const echo = await echoServer();
    const { port, proxy } = await proxyFor(net, echo.port);
    const s = await dial(port, B);
    await until(() => echo.accepted() === 1, 2000, "first upstream connection");

    net.partition(["b"], ["a", "c"]);
    const data = randomBytes(100_000);
    let got = 0;
    s.on("data", (d: Buffer) => {
      got += d.length;
    });
    s.write(data);
    const late = await dial(port, B); // accepted by the proxy, but not connected upstream
    await sleep(300);
    assert.equal(got, 0, "no bytes cross a partition");
    assert.equal(net.link("b", "a").bytesDelivered, 0);
    assert.equal(echo.accepted(), 1, "a connection opened during the partition is held");
    assert.equal(proxy.connections, 2);

    s.removeAllListeners("data");
    const back = readBytes(s, data.length - got);
    const lateBack = readBytes(late, 5);
    late.write("hello");
    net.heal();
    assert.equal(sha(await back), sha(data));
    assert.equal((await lateBack).toString(), "hello");
    assert.equal(echo.accepted(), 2);
  },
);

test("partition with reset, and resetAll, RST open connections", LIMIT, async () => {
  const net = network();
  const { port } = await proxyFor(net, (await echoServer()).port);
  const s1 = await dial(port, B);
  const s2 = await dial(port, C);
  await sleep(50);
  const err1 = once(s1, "error");
  net.partition(["b"], ["a"], { reset: true });
  assert.equal(((await err1)[0] as NodeJS.ErrnoException).code, "ECONNRESET");
  net.heal();
  const err2 = once(s2, "error");
  net.resetAll("a", "c");
  assert.equal(((await err2)[0] as NodeJS.ErrnoException).code, "ECONNRESET");
  assert.equal(net.link("b", "a").connectionsReset, 1);
  assert.equal(net.link("c", "a").connectionsReset, 1);
});

test("random resets: a long transfer is reset after about resetMeanMs", LIMIT, async () => {
  const net = network();
  net.setLink("b", "a", { resetMeanMs: 100, bandwidthBytesPerSec: 1_000_000 });
  const sink = await sinkServer();
  const { port, proxy } = await proxyFor(net, sink.port);
  const s = await dial(port, B);
  const t0 = performance.now();
  const ended = closeOutcome(s);
  void sendAll(s, randomBytes(64 * 1024), 10_000_000); // would take 10 s
  const outcome = await ended;
  const elapsed = performance.now() - t0;
  assert.ok(outcome === "ECONNRESET" || outcome === "close", `outcome ${outcome}`);
  assert.ok(elapsed < 3000, `reset after ${elapsed} ms`);
  assert.equal(net.link("b", "a").connectionsReset, 1);
  await until(() => proxy.connections === 0, 2000, "the proxy to forget the connection");
});

test("refusals and closes on the server side reach the client; the proxy forgets them", LIMIT, async () => {
  const net = network();
  const refused = await proxyFor(net, await freePort());
  const s1 = await dial(refused.port, B);
  assert.ok(["ECONNRESET", "close"].includes(await closeOutcome(s1)));

  const rude = await server((s) => s.destroy());
  const closing = await proxyFor(net, rude.port);
  const s2 = await dial(closing.port, B);
  assert.ok(["ECONNRESET", "close"].includes(await closeOutcome(s2)));
  await until(
    () => refused.proxy.connections + closing.proxy.connections === 0,
    2000,
    "connections forgotten",
  );
});

test("the model: lazy links, setLinks, partition/heal/stall flags, unknown never partitioned", () => {
  const net = network();
  net.setLinks((src) => src === "b", { latencyMs: 7 });
  assert.equal(net.link("b", "a").profile.latencyMs, 7);
  assert.equal(net.link("b", "c").profile.latencyMs, 7);
  assert.equal(net.link("a", "b").profile.latencyMs, 0);
  net.setLink("b", "a", { bandwidthBytesPerSec: 1000 });
  net.setLink("b", "a", { bandwidthBytesPerSec: undefined });
  assert.equal(
    net.link("b", "a").profile.bandwidthBytesPerSec,
    undefined,
    "undefined in a patch means unlimited",
  );
  assert.equal(net.nodeOf("::ffff:127.0.0.12"), "b");
  assert.equal(net.nodeOf("127.0.0.99"), "unknown");

  net.partition(["a", "unknown"], ["b", "c"]);
  assert.ok(net.link("a", "b").blocked && net.link("b", "a").blocked && net.link("c", "a").blocked);
  assert.ok(!net.link("b", "c").blocked, "inside a group");
  assert.ok(!net.link("unknown", "b").blocked && !net.link("b", "unknown").blocked);
  net.stall("b", "c", true);
  net.heal();
  assert.ok(!net.link("a", "b").blocked && !net.link("c", "a").blocked);
  assert.ok(net.link("b", "c").blocked && !net.link("c", "b").blocked, "heal leaves stalls");
});

test("the token bucket: burst of max(64 KiB, 50 ms), then the rate", () => {
  const slow = new TokenBucket(100_000, 0);
  assert.equal(slow.burst(), 64 * 1024);
  assert.equal(slow.reserve(64 * 1024, 0), 0);
  assert.equal(slow.reserve(10_000, 0), 100, "10 kB at 100 kB/s");
  assert.equal(slow.reserve(10_000, 50), 150, "debt carries over, refills with time");
  assert.equal(new TokenBucket(10_000_000, 0).burst(), 500_000);
  assert.equal(new TokenBucket(undefined, 0).reserve(1e12, 0), 0);
});

test("reset times are seeded per link: same seed, same draws", () => {
  const draws = (seed: string, dst: string) => {
    const net = network(seed);
    net.setLink("b", dst, { resetMeanMs: 100, jitterMs: 10 });
    const link = net.link("b", dst);
    return [link.resetDelaySample(), link.jitterSample(), link.resetDelaySample()];
  };
  assert.deepEqual(draws("s1", "a"), draws("s1", "a"));
  assert.notDeepEqual(draws("s1", "a"), draws("s2", "a"));
  assert.notDeepEqual(draws("s1", "a"), draws("s1", "c"));
});

test(
  "backpressure: a slow then stalled link holds a 50 MB sender with bounded queues, then delivers it all",
  LIMIT,
  async (t) => {
    const net = network();
    const sink = await sinkServer();
    const { port, proxy } = await proxyFor(net, sink.port);
    net.setLink("b", "a", { bandwidthBytesPerSec: 200_000 });
    const s = await dial(port, B);
    const chunk = randomBytes(1 << 20);
    const total = 50 << 20;
    const sent = { bytes: 0 };
    const before = process.memoryUsage();
    const done = sendAll(s, chunk, total, sent);
    const bound = proxy.highWaterBytes + 64 * 1024; // one socket read may overshoot the mark

    // Slow: the queue fills to the high-water mark and no further.
    await sleep(400);
    assert.ok(proxy.peakQueuedBytes >= proxy.highWaterBytes, `the queue filled: ${proxy.peakQueuedBytes}`);
    assert.ok(proxy.peakQueuedBytes <= bound, `peak queued ${proxy.peakQueuedBytes}`);

    // Stalled: nothing more crosses; the queue stays bounded; the sender is held back.
    net.stall("b", "a", true);
    await sleep(50); // what was already written to the sink's socket lands
    const frozen = sink.live();
    await sleep(400);
    assert.equal(sink.live(), frozen, "nothing crosses a stalled link");
    assert.ok(proxy.queuedBytes <= bound, `queued ${proxy.queuedBytes}`);
    assert.ok(proxy.peakQueuedBytes <= bound, `peak queued ${proxy.peakQueuedBytes}`);
    assert.ok(sent.bytes < total / 2, `the sender is held back (${sent.bytes} bytes accepted)`);
    const grew = process.memoryUsage().rss - before.rss;
    t.diagnostic(
      `held: sender wrote ${sent.bytes >> 10} KiB, sink got ${frozen >> 10} KiB, proxy peak ${proxy.peakQueuedBytes >> 10} KiB, rss +${grew >> 20} MiB`,
    );
    assert.ok(grew < 64 << 20, `rss grew by ${grew >> 20} MiB`);

    net.stall("b", "a", false);
    net.setLink("b", "a", { bandwidthBytesPerSec: undefined });
    await done;
    await until(() => sink.received.length === 1, 10_000, "the sink to receive 50 MB");
    const h = createHash("sha256");
    for (let i = 0; i < 50; i++) h.update(chunk);
    assert.deepEqual(sink.received[0], { bytes: total, sha: h.digest("hex") });
    assert.ok(proxy.peakQueuedBytes <= bound, `peak queued ${proxy.peakQueuedBytes}`);
  },
);

test(
  "ConnectRelay: CONNECT tunnels from the node's own address, with bytes after the header",
  LIMIT,
  async () => {
    const net = network();
    const { port } = await proxyFor(net, (await echoServer()).port);
    const relay = new ConnectRelay({ localAddress: B });
    const { port: relayPort } = await relay.listen();
    cleanups.push(() => relay.close());

    const s = await dial(relayPort, "127.0.0.1", "127.0.0.1");
    const reply = "HTTP/1.1 200 Connection established\r\n\r\nhello";
    const back = readBytes(s, reply.length);
    s.write(`CONNECT ${A}:${port} HTTP/1.1\r\nHost: ${A}:${port}\r\n\r\nhello`);
    assert.equal((await back).toString(), reply);
    assert.equal(net.link("b", "a").connectionsOpened, 1, "the proxy saw b as the source");
    assert.equal(relay.connectionsRelayed, 1);

    const bad = await dial(relayPort, "127.0.0.1", "127.0.0.1");
    const badBack = readBytes(bad, 12);
    bad.write("GET / HTTP/1.1\r\n\r\n");
    assert.equal((await badBack).toString(), "HTTP/1.1 400");

    const closedPort = await freePort();
    const refused = await dial(relayPort, "127.0.0.1", "127.0.0.1");
    const refusedBack = readBytes(refused, 12);
    refused.write(`CONNECT 127.0.0.1:${closedPort} HTTP/1.1\r\n\r\n`);
    assert.equal((await refusedBack).toString(), "HTTP/1.1 502");
    const huge = await dial(relayPort, "127.0.0.1", "127.0.0.1");
    const hugeBack = readBytes(huge, 12);
    huge.write(`CONNECT ${"x".repeat(10_000)}`);
    assert.equal((await hugeBack).toString(), "HTTP/1.1 400", "an oversized header is refused");
    assert.equal(relay.connectionsFailed, 3);
  },
);

test(
  "ConnectRelay: a grpc-js client with grpc_proxy reaches a server through the relay and the link",
  LIMIT,
  async () => {
    const net = network();
    net.setLink("b", "a", { latencyMs: 20 });
    const identity = (b: Buffer) => b;
    const service: grpc.ServiceDefinition = {
      echo: {
        path: "/test.Echo/Echo",
        requestStream: false,
        responseStream: false,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
      },
    };
    const grpcServer = new grpc.Server();
    grpcServer.addService(service, {
      echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
        cb(null, call.request),
    });
    const grpcPort = await new Promise<number>((resolve, reject) =>
      grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    cleanups.push(() => grpcServer.forceShutdown());
    const { port } = await proxyFor(net, grpcPort);
    const relay = new ConnectRelay({ localAddress: B });
    await relay.listen();
    cleanups.push(() => relay.close());

    const saved = { grpc_proxy: process.env.grpc_proxy, no_grpc_proxy: process.env.no_grpc_proxy };
    process.env.grpc_proxy = relay.url;
    process.env.no_grpc_proxy = "no-such-host.invalid"; // shadow any no_proxy that lists 127.0.0.x
    const Client = grpc.makeGenericClientConstructor(service, "Echo");
    const client = new Client(`${A}:${port}`, grpc.credentials.createInsecure());
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    try {
      const reply = await new Promise<Buffer>((resolve, reject) =>
        (client as unknown as Record<string, (...a: unknown[]) => void>).echo!(
          Buffer.from("through the relay"),
          { deadline: Date.now() + 5000 },
          (e: Error | null, r: Buffer) => (e ? reject(e) : resolve(r)),
        ),
      );
      assert.equal(reply.toString(), "through the relay");
    } finally {
      client.close();
    }
    assert.equal(relay.connectionsRelayed, 1);
    assert.equal(net.link("b", "a").connectionsOpened, 1, "the proxy saw b as the source");
    assert.ok(net.link("a", "b").bytesDelivered > 0);
  },
);
