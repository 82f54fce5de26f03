/**
 * TLS on both ports (DESIGN.md §5: "use TLS for confidentiality"; `--tls-cert/--tls-key/--tls-ca`
 * of `dagsync serve`). A CA, a server certificate for 127.0.0.1 and a second, unrelated CA are
 * made with `openssl` in a temp dir. The gossip server and the SyncServer run in-process with
 * TLS, and `dagsync serve` runs as a child process with the TLS flags on a devnet generated here:
 * a client trusting the CA works, a plaintext client and a client trusting another CA fail.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import type * as grpc from "@grpc/grpc-js";
import { PeerClient, PeerError } from "../../src/client/index.js";
import type { CommitteeView } from "../../src/core/committee.js";
import { readKeyFile } from "../../src/crypto/index.js";
import type { DevnetChain } from "../../src/devnet/chain.js";
import { encodeFrame } from "../../src/gossip/frames.js";
import {
  freePort,
  metricSum,
  type Proc,
  ProcGroup,
  scrapeMetrics,
  waitUntil,
} from "../helpers/e2e-process.js";
import {
  BlockSupply,
  type CommitteeKeys,
  hex,
  metricValue,
  type RunningGossip,
  smallChain,
  startGossip,
  waitFor,
  waitForAsync,
} from "../helpers/gossip-fixture.js";
import {
  dialerHandshake,
  freshHello,
  helloBytes,
  RawGossipStream,
  rawClient,
} from "../helpers/gossip-raw-client.js";
import {
  type DevnetFixture,
  makeDevnet,
  type RunningServer,
  removeDir,
  serveStoreDir,
  tempDir,
} from "../helpers/server.js";

const run = promisify(execFile);

interface Pki {
  readonly ca: Buffer;
  readonly otherCa: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
  /** Signed by the CA for another name only (no IP:127.0.0.1). */
  readonly otherNameCert: Buffer;
  readonly otherNameKey: Buffer;
}

/**
 * A CA, a server certificate it signs (SAN IP:127.0.0.1, DNS:localhost), another for
 * example.invalid only, and an unrelated CA.
 */
async function makePki(dir: string): Promise<Pki> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  const p = (f: string) => join(dir, f);
  const selfSignedCa = (name: string) =>
    run("openssl", [
      "req",
      "-x509",
      ...ec,
      "-keyout",
      p(`${name}.key`),
      "-out",
      p(`${name}.pem`),
      "-days",
      "2",
      "-subj",
      `/CN=dagsync test ${name}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]);
  /** A server certificate signed by the CA, as `<name>.pem` and `<name>.key`. */
  const serverCert = async (name: string, subject: string, subjectAltName: string) => {
    await run("openssl", [
      "req",
      ...ec,
      "-keyout",
      p(`${name}.key`),
      "-out",
      p(`${name}.csr`),
      "-subj",
      subject,
    ]);
    await writeFile(
      p(`${name}.ext`),
      `subjectAltName=${subjectAltName}\nbasicConstraints=CA:FALSE\n` +
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    await run("openssl", [
      "x509",
      "-req",
      "-in",
      p(`${name}.csr`),
      "-CA",
      p("ca.pem"),
      "-CAkey",
      p("ca.key"),
      "-CAcreateserial",
      "-out",
      p(`${name}.pem`),
      "-days",
      "2",
      "-extfile",
      p(`${name}.ext`),
    ]);
  };
  await selfSignedCa("ca");
  await selfSignedCa("other-ca");
  await serverCert("server", "/CN=localhost", "IP:127.0.0.1,DNS:localhost");
  // The same CA, for a name that is not this host.
  await serverCert("other-name", "/CN=example.invalid", "DNS:example.invalid");
  return {
    otherNameCert: await readFile(p("other-name.pem")),
    otherNameKey: await readFile(p("other-name.key")),
    ca: await readFile(p("ca.pem")),
    otherCa: await readFile(p("other-ca.pem")),
    cert: await readFile(p("server.pem")),
    key: await readFile(p("server.key")),
    certFile: p("server.pem"),
    keyFile: p("server.key"),
    caFile: p("ca.pem"),
  };
}

/** Resolves with the error of `call`, failing if it succeeds. */
async function failure(call: Promise<unknown>, what: string): Promise<unknown> {
  const outcome = await call.then(
    () => ({ ok: true as const }),
    (e: unknown) => ({ ok: false as const, e }),
  );
  assert.ok(!outcome.ok, `${what} must fail`);
  return outcome.e;
}

describe("TLS on the gossip and sync ports", () => {
  let dir: string;
  let pki: Pki;
  let devnet: DevnetFixture;
  let chain: DevnetChain;
  let committee: CommitteeView;
  let keys: CommitteeKeys[];
  const procs = new ProcGroup();

  // grpc-js sends an IP host as the TLS server name, which Node reports once per process
  // (DEP0123): dialing as GossipNode does must not.
  const warnings: string[] = [];
  const onWarning = (w: Error & { code?: string }) => warnings.push(`${w.code ?? w.name}: ${w.message}`);
  process.on("warning", onWarning);

  before(async () => {
    dir = await tempDir("dagsync-tls-");
    pki = await makePki(dir);
    ({ chain, committee, keys } = smallChain(41));
    // Validator addresses nobody listens on, so that the child's gossip dials go nowhere; another
    // seed than the in-process chain, so that nothing here shares a chain id with it.
    devnet = await makeDevnet({
      validators: 4,
      epochs: 1,
      commitsPerEpoch: 12,
      txsPerBlock: 1,
      txBytes: 16,
      seed: 43,
      basePort: 10_000 + Math.floor(Math.random() * 20_000), // below the ephemeral port range
    });
  });

  after(async () => {
    process.off("warning", onWarning);
    await procs.stopAll();
    await devnet?.remove();
    if (dir !== undefined) await removeDir(dir);
  });

  test("gossip: a TLS dialer trusting the CA completes the handshake; plaintext and wrong-CA dialers fail", async () => {
    const supply = new BlockSupply(chain);
    const chainId = chain.chainId;
    const nodes: RunningGossip[] = [];
    const clients: grpc.Client[] = [];
    try {
      const listener = await startGossip({
        chainId,
        key: keys[0]!.network,
        committee,
        tls: { cert: pki.cert, key: pki.key },
      });
      nodes.push(listener);
      const up = (k: Uint8Array) => listener.node.peers().some((p) => p.key === hex(k));

      // A raw TLS client runs the whole handshake and its frames are delivered.
      const tlsClient = rawClient(listener.address, pki.ca);
      clients.push(tlsClient);
      const s = new RawGossipStream(tlsClient);
      const hs = await dialerHandshake(s, keys[1]!.network, freshHello(chainId, keys[1]!.network));
      assert.deepEqual(hs.listener.networkKey, keys[0]!.network.publicKey);
      await waitFor(() => up(keys[1]!.network.publicKey), "the TLS session");
      const txs: string[] = [];
      listener.node.onTransaction((tx) => txs.push(hex(tx)));
      const tx = new Uint8Array(randomBytes(32));
      s.send(encodeFrame("transaction", tx));
      await waitFor(() => txs.length === 1, "the transaction over TLS");
      assert.equal(txs[0], hex(tx));
      s.cancel();

      // A real GossipNode dialing with tlsCa.
      const dialer = await startGossip({
        chainId,
        key: keys[2]!.network,
        committee,
        listen: false,
        tlsCa: pki.ca,
      });
      nodes.push(dialer);
      dialer.node.dial(listener.address, keys[0]!.network.publicKey);
      await waitFor(
        () => up(keys[2]!.network.publicKey) && dialer.node.peers().length === 1,
        "the GossipNode's TLS session",
      );
      const blocks: string[] = [];
      dialer.node.onBlock((b) => blocks.push(hex(b.digest)));
      const block = supply.next();
      listener.node.publishBlock(block);
      await waitFor(() => blocks.length === 1, "a block over TLS");
      assert.equal(blocks[0], createHash("sha256").update(block).digest("hex"));

      const handshakesBefore = await metricValue(listener.registry, "dagsync_gossip_handshakes_total");
      // Plaintext and a client trusting another CA never reach the handshake.
      for (const [what, ca] of [
        ["plaintext", undefined],
        ["another CA", pki.otherCa],
      ] as const) {
        const c = rawClient(listener.address, ca);
        clients.push(c);
        const bad = new RawGossipStream(c);
        bad.send(helloBytes(freshHello(chainId, keys[3]!.network)));
        const end = await bad.waitEnd(10_000);
        assert.equal(end.codeName, "UNAVAILABLE", `${what}: ${end.codeName} "${end.details}"`);
        assert.equal(bad.received.length, 0, `${what}: no frames`);
        assert.equal(up(keys[3]!.network.publicKey), false, `${what}: no session`);
      }
      // A GossipNode trusting another CA keeps failing to dial.
      const wrong = await startGossip({
        chainId,
        key: keys[3]!.network,
        committee,
        listen: false,
        tlsCa: pki.otherCa,
        options: { reconnectBaseMs: 50, reconnectMaxMs: 200 },
      });
      nodes.push(wrong);
      wrong.node.dial(listener.address, keys[0]!.network.publicKey);
      await waitForAsync(
        async () =>
          (await metricValue(wrong.registry, "dagsync_gossip_handshakes_total", {
            role: "dialer",
            result: "failed",
          })) >= 1,
        "the wrong-CA dial to fail",
        10_000,
      );
      assert.deepEqual(wrong.node.peers(), []);
      assert.equal(up(keys[3]!.network.publicKey), false);
      assert.equal(
        await metricValue(listener.registry, "dagsync_gossip_handshakes_total"),
        handshakesBefore,
        "no failed TLS connection reached the gossip handshake",
      );
    } finally {
      for (const c of clients) c.close();
      for (const n of nodes.reverse()) await n.stop();
    }
  });

  test("sync: GetCommitAvailability over TLS with the CA; plaintext and wrong-CA clients fail", async () => {
    let server: RunningServer | undefined;
    const clients: PeerClient[] = [];
    const client = (ca?: Buffer) => {
      const c = new PeerClient(server!.address, {
        smallCallTimeoutMs: 5_000,
        ...(ca === undefined ? {} : { tlsCa: ca }),
      });
      clients.push(c);
      return c;
    };
    try {
      server = await serveStoreDir(devnet.storePath(0), { tls: { cert: pki.cert, key: pki.key } });
      const availability = await client(pki.ca).getCommitAvailability();
      assert.equal(availability.highest, devnet.summary.commits);
      assert.equal(availability.lowest, 1);
      assert.equal(hex(availability.genesisDigest), devnet.summary.genesisDigest);

      const plain = await failure(client().getCommitAvailability(), "a plaintext call to a TLS port");
      assert.ok(plain instanceof PeerError, String(plain));
      const wrongCa = await failure(
        client(pki.otherCa).getCommitAvailability(),
        "a call trusting another CA",
      );
      assert.ok(wrongCa instanceof PeerError, String(wrongCa));
      assert.match(wrongCa.message, /certificate|self.signed|verify/i);
    } finally {
      for (const c of clients) c.close();
      await server?.stop();
    }
  });

  test("dagsync serve --tls-cert --tls-key (child process): GetCommitAvailability and the gossip handshake over TLS", async () => {
    const v = devnet.summary.validators;
    let proc: Proc | undefined;
    let address = "";
    let gossipAddress = "";
    let metricsAddress = "";
    // A port can be taken between freePort() and the child's bind: retry on another.
    for (let attempt = 0; attempt < 3 && address === ""; attempt++) {
      const [port, gport, mport] = [await freePort(), await freePort(), await freePort()];
      proc = procs.cli(`serve-tls-${attempt}`, [
        "serve",
        "--store",
        devnet.storePath(1),
        "--listen",
        `127.0.0.1:${port}`,
        "--gossip-listen",
        `127.0.0.1:${gport}`,
        "--network-key",
        v[1]!.networkKeyFile,
        "--tls-cert",
        pki.certFile,
        "--tls-key",
        pki.keyFile,
        "--metrics",
        `127.0.0.1:${mport}`,
      ]);
      const tls = new PeerClient(`127.0.0.1:${port}`, { tlsCa: pki.ca, smallCallTimeoutMs: 2_000 });
      try {
        const p = proc;
        const availability = await waitUntil(
          async () => {
            if (p.exit !== undefined) return { exited: true as const };
            try {
              return { exited: false as const, a: await tls.getCommitAvailability() };
            } catch {
              return undefined;
            }
          },
          "the child to serve over TLS",
          60_000,
          200,
        ).catch((e: unknown) => {
          throw new Error(`${(e as Error).message}\n${p.output()}`, { cause: e });
        });
        if (availability.exited) {
          if (/already in use/.test(p.stderr())) continue;
          assert.fail(`dagsync serve exited ${JSON.stringify(p.exit)}\n${p.output()}`);
        }
        assert.equal(availability.a.highest, devnet.summary.commits);
        assert.equal(hex(availability.a.genesisDigest), devnet.summary.genesisDigest);
        address = `127.0.0.1:${port}`;
        gossipAddress = `127.0.0.1:${gport}`;
        metricsAddress = `127.0.0.1:${mport}`;
      } finally {
        tls.close();
      }
    }
    assert.notEqual(address, "", "the child never served");

    // Failures below carry the child's output.
    try {
      // Plaintext is refused on the sync port.
      const plain = new PeerClient(address, { smallCallTimeoutMs: 3_000 });
      try {
        await failure(plain.getCommitAvailability(), "a plaintext call to `serve --tls-cert`");
      } finally {
        plain.close();
      }

      // The gossip port uses the same certificate: a TLS dialer with validator 2's network key
      // completes the handshake with validator 1's key.
      const dialerKey = await readKeyFile(v[2]!.networkKeyFile);
      const listenerKey = await readKeyFile(v[1]!.networkKeyFile);
      const gossip = rawClient(gossipAddress, pki.ca);
      try {
        const s = new RawGossipStream(gossip);
        const hs = await dialerHandshake(s, dialerKey, freshHello(devnet.summary.chainId, dialerKey));
        assert.deepEqual(hs.listener.networkKey, listenerKey.publicKey);
        assert.equal(hs.listener.chainId, devnet.summary.chainId);
        // Accepted: the child counts an authenticated session (and a listener-side OK handshake).
        const peersUp = await waitUntil(
          async () => {
            const text = await scrapeMetrics(metricsAddress);
            return metricSum(text, "dagsync_gossip_peers") === 1 ? text : undefined;
          },
          "the child's dagsync_gossip_peers to reach 1",
          15_000,
        );
        assert.equal(
          metricSum(peersUp, "dagsync_gossip_handshakes_total", { role: "listener", result: "OK" }),
          1,
        );
        assert.equal(s.status, undefined, `the session ended: ${JSON.stringify(s.status)}`);
        s.cancel();
        const plainGossip = rawClient(gossipAddress);
        try {
          const bad = new RawGossipStream(plainGossip);
          bad.send(helloBytes(freshHello(devnet.summary.chainId, dialerKey)));
          const end = await bad.waitEnd(10_000);
          assert.equal(end.codeName, "UNAVAILABLE", `plaintext gossip: ${end.codeName} "${end.details}"`);
        } finally {
          plainGossip.close();
        }
      } finally {
        gossip.close();
      }
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${proc!.output()}`, { cause: e });
    }

    const started = performance.now();
    const exit = await proc!.stop(15_000);
    assert.equal(
      exit.code,
      0,
      `dagsync serve exit ${JSON.stringify(exit)} after SIGTERM (${(performance.now() - started).toFixed(0)} ms)\n${proc!.output()}`,
    );
  });

  test("gossip: a certificate from the trusted CA that does not name the dialed IP is refused", async () => {
    const listener = await startGossip({
      chainId: chain.chainId,
      key: keys[0]!.network,
      committee,
      tls: { cert: pki.otherNameCert, key: pki.otherNameKey },
    });
    const c = rawClient(listener.address, pki.ca);
    try {
      const s = new RawGossipStream(c);
      s.send(helloBytes(freshHello(chain.chainId, keys[1]!.network)));
      const end = await s.waitEnd(10_000);
      assert.equal(end.codeName, "UNAVAILABLE", `${end.codeName} "${end.details}"`);
      assert.equal(s.received.length, 0);
    } finally {
      c.close();
      await listener.stop();
    }
  });

  test("no TLS dial above sent an IP address as the server name (no DEP0123 warning)", () => {
    assert.deepEqual(
      warnings.filter((w) => w.startsWith("DEP0123")),
      [],
    );
  });
});
