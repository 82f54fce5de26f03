/**
 * The handshake of the live channel as one state machine for both roles (DESIGN.md §5).
 *
 * Design: the listener and the dialer walk the same edges, in the same order, and differ only in
 * what they send on them:
 *
 *   awaiting_hello ──receiveHello──▶ awaiting_auth ──receiveAuth──▶ established
 *         │                               │
 *         └──────── fail / timeout ───────┴──────────────────────▶ failed
 *
 * - dialer:   opens with its Hello; on the listener's Hello checks it (and the expected key);
 *             on the listener's Auth verifies T(listener) and answers with its own Auth, T(dialer).
 * - listener: opens with nothing; on the dialer's Hello checks it (and that its nonce is new) and
 *             answers with its Hello and Auth, T(listener); on the dialer's Auth verifies T(dialer).
 *
 * The state is a discriminated union: what a state holds (our Hello, theirs, the error) is there
 * only in the states where it is known. Each transition is named for its edge and first checks
 * the state it leaves (as Lodestar's range-sync batches do): calling one from the wrong state is
 * a bug of the caller and throws a HandshakeError with code WRONG_STATE; anything the peer does
 * wrong moves the machine to `failed` with a HandshakeError whose `code` says which check failed.
 * The machine is pure (no I/O, no timers, no clock of its own): the caller feeds it frames, a
 * timeout, or the end of the stream, and writes the frames it returns.
 *
 * Threats handled here: strangers (nothing but a Hello is read before the handshake; the chain,
 * the allowed set, the blocker and the timestamp window are checked before anything is sent
 * back), replay (the listener refuses a nonce it has seen; both transcripts bind both nonces, so
 * an Auth from another session never verifies), impersonation and reflection (each side signs
 * T(its role) binding both keys; the dialer may pin the listener's key), out-of-order or junk
 * frames (the first wrong frame fails the handshake), and slow peers (the caller's timeout).
 */
import type { SignatureVerifier } from "../core/types.js";
import { decodeAuth, decodeHello, encodeAuth, encodeHello, parseFrame, type RawFrame } from "./frames.js";
import {
  checkHello,
  type HelloPolicy,
  type HelloRefusalCode,
  type HelloView,
  helloView,
  type Role,
  sameKey,
  transcript,
} from "./handshake.js";

/** Which check failed; stable, unlike the message. */
export type HandshakeErrorCode =
  | HelloRefusalCode
  /** The frame does not parse as a GossipFrame. */
  | "JUNK_FRAME"
  /** A frame of a kind the state does not expect (a lane frame, a second Hello, Auth before Hello). */
  | "UNEXPECTED_FRAME"
  /** The Hello payload does not decode (strictly). */
  | "BAD_HELLO"
  /** The listener has seen this Hello's nonce within the acceptance window. */
  | "REPLAYED_NONCE"
  /** The listener's key is not the one the dialer expected. */
  | "WRONG_KEY"
  /** The Auth payload does not decode. */
  | "BAD_AUTH"
  /** The transcript signature does not verify (wrong key, other nonces, other session). */
  | "BAD_SIGNATURE"
  /** The handshake did not finish in time. */
  | "TIMEOUT"
  /** The stream failed or ended before the handshake finished. */
  | "STREAM_CLOSED"
  /** A transition was called from a state it does not leave: a bug of the caller. */
  | "WRONG_STATE";

/**
 * A handshake failure. `permission` ones are answered PERMISSION_DENIED (the peer may be who it
 * says but is not admitted), the rest UNAUTHENTICATED.
 */
export class HandshakeError extends Error {
  override readonly name = "HandshakeError";

  constructor(
    readonly code: HandshakeErrorCode,
    message: string,
    readonly kind: "permission" | "unauthenticated" = "unauthenticated",
  ) {
    super(message);
  }
}

export type HandshakeStatus = "awaiting_hello" | "awaiting_auth" | "established" | "failed";

export type HandshakeState =
  | { readonly status: "awaiting_hello"; readonly mine: HelloView }
  | { readonly status: "awaiting_auth"; readonly mine: HelloView; readonly theirs: HelloView }
  | { readonly status: "established"; readonly mine: HelloView; readonly theirs: HelloView }
  | { readonly status: "failed"; readonly error: HandshakeError };

/** What the machine needs from its node; read at the moment each frame arrives. */
export interface HandshakeContext {
  readonly chainId: string;
  /** This node's network key. */
  readonly signer: { readonly publicKey: Uint8Array; sign(message: Uint8Array): Uint8Array };
  readonly verifier: SignatureVerifier;
  /** The admission policy at this moment (its `now` included). */
  policy(): HelloPolicy;
  /** Listener: records the nonce, false when it was seen (a replay). Unused by the dialer. */
  admitNonce?(nonce: Uint8Array): boolean;
  /** Dialer: the listener's key, when known (committee members). Unused by the listener. */
  readonly expectedKey?: Uint8Array | undefined;
}

/**
 * The messages of each failure, per role. The listener's reach the dialer as the status details
 * (and are part of what the integration tests check); the dialer's go to its log.
 */
const MESSAGES: Record<Role, (code: HandshakeErrorCode, detail: string) => string> = {
  listener: (code, detail) => {
    switch (code) {
      case "JUNK_FRAME":
        return `junk before the handshake: ${detail}`;
      case "UNEXPECTED_FRAME":
        return detail;
      case "BAD_HELLO":
        return "hello does not decode";
      case "REPLAYED_NONCE":
        return "replayed hello (nonce already seen)";
      case "BAD_AUTH":
        return "auth does not decode";
      case "BAD_SIGNATURE":
        return "bad transcript signature";
      default:
        return detail;
    }
  },
  dialer: (code, detail) => {
    switch (code) {
      case "JUNK_FRAME":
        return "junk from listener";
      case "UNEXPECTED_FRAME":
        return detail;
      case "BAD_HELLO":
        return "listener hello does not decode";
      case "WRONG_KEY":
        return "listener has another network key";
      case "BAD_AUTH":
        return "listener auth does not decode";
      case "BAD_SIGNATURE":
        return "bad listener transcript signature";
      case "TIMEOUT":
        return "handshake timeout";
      case "STREAM_CLOSED":
      case "WRONG_STATE":
        return detail;
      default:
        return `listener refused: ${detail}`;
    }
  },
};

function unexpectedFrame(role: Role, kind: RawFrame["kind"], status: HandshakeStatus): string {
  if (role === "listener")
    return status === "awaiting_hello"
      ? `${kind} frame before the handshake`
      : `${kind} frame before the handshake finished`;
  return `listener sent ${kind} before ${status === "awaiting_hello" ? "hello" : "auth"}`;
}

export class Handshake {
  private current: HandshakeState;

  constructor(
    readonly role: Role,
    mine: HelloView,
    private readonly ctx: HandshakeContext,
  ) {
    this.current = { status: "awaiting_hello", mine };
  }

  get state(): HandshakeState {
    return this.current;
  }

  /** True once established or failed: no transition leaves either. */
  get settled(): boolean {
    return this.current.status === "established" || this.current.status === "failed";
  }

  /** The frames this role sends before hearing anything: the dialer's Hello. */
  opening(): Uint8Array[] {
    const s = this.expect("awaiting_hello", "opening");
    return this.role === "dialer" ? [encodeHelloFrame(s.mine)] : [];
  }

  /**
   * Feeds one frame from the peer; returns the frames to send. A peer fault moves the machine to
   * `failed` (nothing to send); read `state` after each call.
   */
  receive(bytes: Uint8Array): Uint8Array[] {
    if (this.settled) this.wrongState("receive");
    try {
      let frame: RawFrame;
      try {
        frame = parseFrame(bytes);
      } catch (e) {
        throw this.error("JUNK_FRAME", (e as Error).message);
      }
      const status = this.current.status;
      if (frame.kind === "hello" && status === "awaiting_hello") return this.receiveHello(frame.payload);
      if (frame.kind === "auth" && status === "awaiting_auth") return this.receiveAuth(frame.payload);
      throw this.error("UNEXPECTED_FRAME", unexpectedFrame(this.role, frame.kind, status));
    } catch (e) {
      if (!(e instanceof HandshakeError) || e.code === "WRONG_STATE") throw e;
      this.current = { status: "failed", error: e };
      return [];
    }
  }

  /** Edge awaiting_hello → awaiting_auth: the peer's Hello is checked. */
  receiveHello(payload: Uint8Array): Uint8Array[] {
    const { mine } = this.expect("awaiting_hello", "receiveHello");
    let theirs: HelloView;
    try {
      theirs = helloView(decodeHello(payload));
    } catch {
      throw this.error("BAD_HELLO", "");
    }
    const refusal = checkHello(theirs, this.ctx.policy());
    if (refusal !== undefined) throw this.error(refusal.code, refusal.reason, refusal.kind);
    let send: Uint8Array[] = [];
    if (this.role === "listener") {
      if (this.ctx.admitNonce !== undefined && !this.ctx.admitNonce(theirs.nonce))
        throw this.error("REPLAYED_NONCE", "");
      send = [encodeHelloFrame(mine), this.sign(mine, theirs)];
    } else if (this.ctx.expectedKey !== undefined && !sameKey(this.ctx.expectedKey, theirs.networkKey))
      throw this.error("WRONG_KEY", "");
    this.current = { status: "awaiting_auth", mine, theirs };
    return send;
  }

  /** Edge awaiting_auth → established: the peer's transcript signature is verified. */
  receiveAuth(payload: Uint8Array): Uint8Array[] {
    const { mine, theirs } = this.expect("awaiting_auth", "receiveAuth");
    let signature: Uint8Array;
    try {
      signature = decodeAuth(payload).signature;
    } catch {
      throw this.error("BAD_AUTH", "");
    }
    const peerRole: Role = this.role === "dialer" ? "listener" : "dialer";
    if (!this.ctx.verifier.verify(theirs.networkKey, this.transcriptOf(peerRole, mine, theirs), signature))
      throw this.error("BAD_SIGNATURE", "");
    const send = this.role === "dialer" ? [this.sign(mine, theirs)] : [];
    this.current = { status: "established", mine, theirs };
    return send;
  }

  /** Edge to failed: the handshake took longer than `timeoutMs`. */
  timeout(timeoutMs: number): HandshakeError {
    return this.fail(this.error("TIMEOUT", `handshake not finished within ${timeoutMs} ms`));
  }

  /** Edge to failed: the stream failed or ended (or the caller gave up) before the end. */
  streamClosed(reason: string): HandshakeError {
    return this.fail(this.error("STREAM_CLOSED", reason));
  }

  /** Edge to failed, from either waiting state. */
  fail(error: HandshakeError): HandshakeError {
    if (this.settled) this.wrongState("fail");
    this.current = { status: "failed", error };
    return error;
  }

  private sign(mine: HelloView, theirs: HelloView): Uint8Array {
    return encodeAuth(this.ctx.signer.sign(this.transcriptOf(this.role, mine, theirs)));
  }

  private transcriptOf(role: Role, mine: HelloView, theirs: HelloView): Uint8Array {
    return this.role === "dialer"
      ? transcript(role, this.ctx.chainId, mine, theirs)
      : transcript(role, this.ctx.chainId, theirs, mine);
  }

  private expect<S extends HandshakeStatus>(
    status: S,
    transition: string,
  ): Extract<HandshakeState, { status: S }> {
    if (this.current.status !== status) this.wrongState(transition);
    return this.current as Extract<HandshakeState, { status: S }>;
  }

  private wrongState(transition: string): never {
    throw new HandshakeError(
      "WRONG_STATE",
      `${this.role} handshake: ${transition} called in state ${this.current.status}`,
    );
  }

  private error(
    code: HandshakeErrorCode,
    detail: string,
    kind: "permission" | "unauthenticated" = "unauthenticated",
  ): HandshakeError {
    return new HandshakeError(code, MESSAGES[this.role](code, detail), kind);
  }
}

function encodeHelloFrame(hello: HelloView): Uint8Array {
  return encodeHello({ ...hello, timestampMs: BigInt(hello.timestampMs) });
}

/** The parts of a Connect stream (either end) that the handshake uses. */
export interface HandshakeStream {
  write(frame: Uint8Array): boolean;
  on(event: "data", listener: (bytes: Uint8Array) => void): unknown;
  off(event: "data", listener: (bytes: Uint8Array) => void): unknown;
}

/** A handshake bound to a stream: see `runHandshake`. */
export interface RunningHandshake {
  readonly handshake: Handshake;
  /**
   * Unless settled already, takes a failing edge (`h => h.streamClosed(reason)`, `h => h.fail(e)`)
   * and settles.
   */
  abort(failingEdge: (h: Handshake) => HandshakeError): void;
  /** Stops listening and the timer without settling (the stream is gone; nobody needs telling). */
  dispose(): void;
}

/**
 * Runs `handshake` on `stream`, for either role: writes its opening, feeds it every frame, writes
 * what it answers, fails it after `timeoutMs`; calls `settled` once, when it is established or
 * failed, after which the stream's "data" is no longer the handshake's.
 */
export function runHandshake(
  handshake: Handshake,
  stream: HandshakeStream,
  timeoutMs: number,
  settled: (state: Extract<HandshakeState, { status: "established" | "failed" }>) => void,
): RunningHandshake {
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    stream.off("data", onData);
    const s = handshake.state;
    if (s.status === "established" || s.status === "failed") settled(s);
  };
  const onData = (bytes: Uint8Array) => {
    if (done || handshake.settled) return;
    for (const frame of handshake.receive(bytes)) stream.write(frame);
    if (handshake.settled) finish();
  };
  const timer = setTimeout(() => {
    if (done || handshake.settled) return;
    handshake.timeout(timeoutMs);
    finish();
  }, timeoutMs);
  stream.on("data", onData);
  for (const frame of handshake.opening()) stream.write(frame);
  return {
    handshake,
    abort: (failingEdge) => {
      if (done || handshake.settled) return;
      failingEdge(handshake);
      finish();
    },
    dispose: () => {
      done = true;
      clearTimeout(timer);
      stream.off("data", onData);
    },
  };
}
