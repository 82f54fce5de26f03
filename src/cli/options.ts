/** Flag parsers whose errors name the flag and the expected value. */
import { statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { InvalidArgumentError } from "commander";

export function integer(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    if (!/^\d+$/.test(value.trim()))
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}.`);
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`expected an integer from ${min} to ${max}.`);
    return n;
  };
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** A duration such as 500ms, 90s, 2m or 1h (a bare number is seconds), as milliseconds. */
export function duration(value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (m === null) throw new InvalidArgumentError("expected a duration such as 90s, 2m or 500ms.");
  const ms = Math.round(Number(m[1]) * DURATION_UNITS_MS[m[2] ?? "s"]!);
  if (!Number.isSafeInteger(ms))
    throw new InvalidArgumentError("expected a duration such as 90s, 2m or 500ms.");
  return ms;
}

/** host:port with a port in 0..65535 (0 picks a free port). */
export function hostPort(value: string): string {
  const m = /^(.+):(\d{1,5})$/.exec(value.trim());
  if (m === null || Number(m[2]) > 65535)
    throw new InvalidArgumentError("expected HOST:PORT, e.g. 127.0.0.1:9100.");
  return value.trim();
}

/** A repeatable flag; one occurrence may also carry a comma-separated list (as env variables do). */
export function collect(parse: (v: string) => string) {
  return (value: string, previous: string[] = []): string[] => [
    ...previous,
    ...value
      .split(",")
      .filter((v) => v.trim() !== "")
      .map(parse),
  ];
}

/**
 * An archive location (DESIGN §10): an http(s):// base URL, or a directory that exists. Repeatable
 * (no comma-splitting: URLs may hold commas).
 */
export function archiveLocation(value: string, previous: string[] = []): string[] {
  const v = value.trim();
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(v)) {
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      throw new InvalidArgumentError("not a valid URL.");
    }
    if (url.protocol !== "http:" && url.protocol !== "https:")
      throw new InvalidArgumentError(
        `expected a directory or an http:// or https:// URL, not ${url.protocol}//.`,
      );
  } else {
    let isDir = false;
    try {
      isDir = statSync(v).isDirectory();
    } catch {
      throw new InvalidArgumentError("no such directory (give an archive directory or an http(s):// URL).");
    }
    if (!isDir)
      throw new InvalidArgumentError("not a directory (give an archive directory or an http(s):// URL).");
  }
  return [...previous, v];
}

/** An IPv4 or IPv6 address (no port). */
/** An IPv4 address (devnet --hosts: addresses are written HOST:PORT, unbracketed). */
export function ipv4Address(value: string): string {
  const v = value.trim();
  if (isIP(v) !== 4) throw new InvalidArgumentError("expected an IPv4 address such as 127.0.0.11.");
  return v;
}

export function ipAddress(value: string): string {
  const v = value.trim();
  if (isIP(v) === 0) throw new InvalidArgumentError("expected an IP address such as 127.0.0.11 (no port).");
  return v;
}

/** A 32-byte key as 64 hex digits. */
export function hexKey(value: string): string {
  if (!/^[0-9a-fA-F]{64}$/.test(value.trim()))
    throw new InvalidArgumentError("expected a 32-byte key as 64 hex digits.");
  return value.trim();
}

/** Reads --tls-cert/--tls-key/--tls-ca; both cert and key or neither. Errors name the flag. */
export async function readTls(opts: {
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  tlsCa?: string | undefined;
}): Promise<{ cert: Buffer; key: Buffer; ca?: Buffer | undefined } | undefined> {
  if (opts.tlsCert === undefined && opts.tlsKey === undefined) {
    if (opts.tlsCa !== undefined) throw new Error("--tls-ca needs --tls-cert and --tls-key");
    return undefined;
  }
  if (opts.tlsCert === undefined || opts.tlsKey === undefined)
    throw new Error("--tls-cert and --tls-key go together");
  const read = async (flag: string, path: string) => {
    try {
      return await readFile(path);
    } catch (e) {
      throw new Error(
        `${flag} ${path}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : "cannot be read"}`,
      );
    }
  };
  return {
    cert: await read("--tls-cert", opts.tlsCert),
    key: await read("--tls-key", opts.tlsKey),
    ca: opts.tlsCa === undefined ? undefined : await read("--tls-ca", opts.tlsCa),
  };
}

/** Like readTls, but a client-only node may give just --tls-ca (to dial TLS peers). */
export async function readTlsOrCa(opts: {
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  tlsCa?: string | undefined;
}): Promise<{ cert?: Buffer; key?: Buffer; ca?: Buffer | undefined } | undefined> {
  if (opts.tlsCert === undefined && opts.tlsKey === undefined && opts.tlsCa !== undefined) {
    try {
      return { ca: await readFile(opts.tlsCa) };
    } catch {
      throw new Error(`--tls-ca ${opts.tlsCa}: cannot be read`);
    }
  }
  return readTls(opts);
}
