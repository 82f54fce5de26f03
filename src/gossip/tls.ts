/**
 * TLS for dialing a peer's gossip port (DESIGN.md §5: "use TLS for confidentiality").
 *
 * Design: the handshake gives admission control and identity; TLS only hides the content, so the
 * dialer trusts one configured CA and nothing else, and plaintext is used when none is set.
 *
 * Threat handled: a dialer that must check the certificate of an IP address. grpc-js sends the
 * host as the TLS server name even when it is an IP address, which RFC 6066 forbids and Node
 * reports with a DEP0123 warning on every dialing node. For an IP host, the server name sent
 * becomes a fixed DNS name and the server's certificate is still checked against the IP dialed
 * (its subjectAltName must hold it), so the fix weakens no check.
 */
import { isIP } from "node:net";
import { checkServerIdentity } from "node:tls";
import * as grpc from "@grpc/grpc-js";

/** TLS name sent (SNI) when dialing an IP address: any DNS name; the certificate is checked against the IP. */
export const IP_DIAL_SERVERNAME = "dagsync-peer";

/**
 * Client credentials for dialing `address`; plaintext when `tlsCa` is undefined. For an IP host,
 * SNI is IP_DIAL_SERVERNAME and the certificate is checked against the IP (module comment).
 */
export function dialCredentials(
  address: string,
  tlsCa: Buffer | undefined,
): { credentials: grpc.ChannelCredentials; channelOptions: grpc.ChannelOptions } {
  if (tlsCa === undefined) return { credentials: grpc.credentials.createInsecure(), channelOptions: {} };
  const host = address.startsWith("[")
    ? address.slice(1, address.indexOf("]"))
    : address.replace(/:\d+$/, "");
  if (isIP(host) === 0) return { credentials: grpc.credentials.createSsl(tlsCa), channelOptions: {} };
  return {
    credentials: grpc.credentials.createSsl(tlsCa, null, null, {
      checkServerIdentity: (_servername, cert) => checkServerIdentity(host, cert),
    }),
    channelOptions: { "grpc.ssl_target_name_override": IP_DIAL_SERVERNAME },
  };
}
