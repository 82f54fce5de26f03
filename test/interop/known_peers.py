#!/usr/bin/python3
"""Peer exchange from a second implementation: Python grpcio, schema through reflection only.

Usage: known_peers.py HOST:PORT CHAIN_ID SEED_HEX SYNC_ADDRESS

Builds NodeInfo and SignedNodeInfo from the reflected schema, signs its own info (Ed25519 by the
key of SEED_HEX, with `cryptography`) over
  "dagsync/node-info/v1" || 0x00 || chain_id || 0x00 || encoded NodeInfo,
calls dagsync.v1.StateSync/GetKnownPeers with it as `caller`, verifies every signed info of the
answer the same way, and prints one JSON object:

  {"self": {"network_key": hex, "sync_address": s, "gossip_address": s, "timestamp_ms": N,
            "verified": bool} | null,
   "peers": [{... same ...}], "caller_key": hex}
"""

import json
import sys
import time

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from reflect_fetch import connect_reflection, load_pool, message_class

DOMAIN = b"dagsync/node-info/v1"


def signing_message(chain_id, info_bytes):
    return DOMAIN + b"\x00" + chain_id.encode() + b"\x00" + info_bytes


def describe(signed, chain_id):
    info = signed.info
    try:
        Ed25519PublicKey.from_public_bytes(info.network_key).verify(
            signed.signature, signing_message(chain_id, info.SerializeToString())
        )
        verified = True
    except Exception:
        verified = False
    return {
        "network_key": info.network_key.hex(),
        "sync_address": info.sync_address,
        "gossip_address": info.gossip_address,
        "timestamp_ms": info.timestamp_ms,
        "verified": verified,
    }


def main():
    target, chain_id, seed_hex, sync_address = sys.argv[1:5]
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        reflection, _ = connect_reflection(channel, ["v1", "v1alpha"])
        pool = load_pool(reflection, "dagsync.v1.StateSync")
        service = pool.FindServiceByName("dagsync.v1.StateSync")
        method = service.methods_by_name["GetKnownPeers"]
        NodeInfo = message_class(pool.FindMessageTypeByName("dagsync.v1.NodeInfo"))
        SignedNodeInfo = message_class(pool.FindMessageTypeByName("dagsync.v1.SignedNodeInfo"))
        Request = message_class(method.input_type)
        Response = message_class(method.output_type)
        info = NodeInfo(network_key=public, sync_address=sync_address, timestamp_ms=int(time.time() * 1000))
        signature = key.sign(signing_message(chain_id, info.SerializeToString()))
        call = channel.unary_unary(
            f"/{service.full_name}/{method.name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=Response.FromString,
        )
        answer = call(Request(caller=SignedNodeInfo(info=info, signature=signature)), timeout=10)
        print(
            json.dumps(
                {
                    "self": describe(answer.self, chain_id) if answer.HasField("self") else None,
                    "peers": [describe(p, chain_id) for p in answer.peers],
                    "caller_key": public.hex(),
                }
            )
        )


if __name__ == "__main__":
    main()
