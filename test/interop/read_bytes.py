#!/usr/bin/python3
"""How a second protobuf implementation (Python's) reads bytes that dagsync reads.

Usage: read_bytes.py DESCRIPTOR_SET HOST:PORT < cases.json

DESCRIPTOR_SET is src/gen/dagsync.binpb (a FileDescriptorSet from `buf build`). stdin is a JSON
list of {"type": "dagsync.v1.Block", "hex": "..."}; for each, Python's protobuf parses the bytes
and reports its reading. Then it sends the raw bytes 0d23109901 as a FetchCommits request over
grpcio and reports the status. Prints one JSON object:

  {"readings": [{"fields": {...}, "unknown": N} | {"error": "..."}],
   "fetch_commits_raw": {"code": "INVALID_ARGUMENT", "details": "..."}}
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory


def message_class(pool, name):
    descriptor = pool.FindMessageTypeByName(name)
    get = getattr(message_factory, "GetMessageClass", None)
    if get is not None:
        return get(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def unknown_count(message):
    try:
        from google.protobuf import unknown_fields

        return len(unknown_fields.UnknownFieldSet(message))
    except ImportError:
        return len(message.UnknownFields())


def main():
    descriptor_set, address = sys.argv[1], sys.argv[2]
    files = descriptor_pb2.FileDescriptorSet()
    with open(descriptor_set, "rb") as f:
        files.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    readings = []
    for case in json.load(sys.stdin):
        message = message_class(pool, case["type"])()
        try:
            message.ParseFromString(bytes.fromhex(case["hex"]))
        except Exception as e:  # noqa: BLE001 - report any parse failure
            readings.append({"error": str(e)})
            continue
        fields = json_format.MessageToDict(message, preserving_proto_field_name=True)
        readings.append({"fields": fields, "unknown": unknown_count(message)})
    channel = grpc.insecure_channel(address)
    call = channel.unary_unary(
        "/dagsync.v1.StateSync/FetchCommits",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        call(bytes.fromhex("0d23109901"), timeout=10)
        raw = {"code": "OK", "details": ""}
    except grpc.RpcError as e:
        raw = {"code": e.code().name, "details": e.details()}
    print(json.dumps({"readings": readings, "fetch_commits_raw": raw}))


if __name__ == "__main__":
    main()
