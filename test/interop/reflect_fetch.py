#!/usr/bin/python3
"""A second gRPC implementation against a dagsync server: Python grpcio, with no generated code.

Usage: reflect_fetch.py HOST:PORT [START END] [--reflection v1|v1alpha]

Discovers the schema through server reflection (grpc.reflection.v1, falling back to v1alpha;
--reflection uses only the one given),
builds message classes from the returned FileDescriptorProtos, calls
dagsync.v1.StateSync/GetCommitAvailability and FetchCommits(START, END) and prints one JSON object:

  {"reflection": "v1", "services": [...], "highest": N, "lowest": N, "epoch": N,
   "genesis_digest": hex, "commits": K, "indices": [...], "commit_sha256": [hex, ...],
   "certifier_blocks": M}

commit_sha256 is the SHA-256 of each decoded commit re-serialized with SerializeToString: for the
canonical messages dagsync stores, that equals the digest of the bytes the server sent.

grpcio-reflection is not installed, so the reflection messages are defined here from a hand-built
FileDescriptorProto (only the fields this script uses). Works with python3-protobuf 3.x and 4.x:
message classes come from message_factory.GetMessageClass where it exists (protobuf >= 4.22) and
from MessageFactory.GetPrototype otherwise.
"""

import argparse
import hashlib
import json

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto


def message_class(descriptor):
    get = getattr(message_factory, "GetMessageClass", None)
    if get is not None:
        return get(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


def reflection_file(package):
    """The subset of grpc/reflection/{v1,v1alpha}/reflection.proto this client uses."""
    fd = descriptor_pb2.FileDescriptorProto(
        name=f"dagsync_interop/{package}/reflection.proto", package=package, syntax="proto3"
    )

    def message(name, fields, oneof=None):
        m = fd.message_type.add(name=name)
        if oneof is not None:
            m.oneof_decl.add(name=oneof)
        for fname, number, ftype, label, type_name, in_oneof in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label, json_name=fname)
            if type_name:
                f.type_name = f".{package}.{type_name}"
            if in_oneof:
                f.oneof_index = 0

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message(
        "ServerReflectionRequest",
        [
            ("host", 1, F.TYPE_STRING, opt, None, False),
            ("file_by_filename", 3, F.TYPE_STRING, opt, None, True),
            ("file_containing_symbol", 4, F.TYPE_STRING, opt, None, True),
            ("list_services", 7, F.TYPE_STRING, opt, None, True),
        ],
        oneof="message_request",
    )
    message("FileDescriptorResponse", [("file_descriptor_proto", 1, F.TYPE_BYTES, rep, None, False)])
    message("ServiceResponse", [("name", 1, F.TYPE_STRING, opt, None, False)])
    message("ListServiceResponse", [("service", 1, F.TYPE_MESSAGE, rep, "ServiceResponse", False)])
    message(
        "ErrorResponse",
        [
            ("error_code", 1, F.TYPE_INT32, opt, None, False),
            ("error_message", 2, F.TYPE_STRING, opt, None, False),
        ],
    )
    message(
        "ServerReflectionResponse",
        [
            ("valid_host", 1, F.TYPE_STRING, opt, None, False),
            ("original_request", 2, F.TYPE_MESSAGE, opt, "ServerReflectionRequest", False),
            ("file_descriptor_response", 4, F.TYPE_MESSAGE, opt, "FileDescriptorResponse", True),
            ("list_services_response", 6, F.TYPE_MESSAGE, opt, "ListServiceResponse", True),
            ("error_response", 7, F.TYPE_MESSAGE, opt, "ErrorResponse", True),
        ],
        oneof="message_response",
    )
    return fd


class Reflection:
    """One ServerReflectionInfo stream per request (simple and enough for a handful of lookups)."""

    def __init__(self, channel, package):
        pool = descriptor_pool.DescriptorPool()
        pool.Add(reflection_file(package))
        self.Request = message_class(pool.FindMessageTypeByName(f"{package}.ServerReflectionRequest"))
        self.Response = message_class(pool.FindMessageTypeByName(f"{package}.ServerReflectionResponse"))
        self.version = package.split(".")[-1]
        self.call = channel.stream_stream(
            f"/{package}.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=self.Response.FromString,
        )

    def ask(self, **request):
        responses = list(self.call(iter([self.Request(**request)]), timeout=10))
        if len(responses) != 1:
            raise RuntimeError(f"reflection: {len(responses)} responses to one request")
        response = responses[0]
        if response.WhichOneof("message_response") == "error_response":
            e = response.error_response
            raise RuntimeError(f"reflection error {e.error_code}: {e.error_message}")
        return response

    def services(self):
        return [s.name for s in self.ask(list_services="").list_services_response.service]

    def files(self, **request):
        protos = []
        for raw in self.ask(**request).file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto()
            fd.ParseFromString(raw)
            protos.append(fd)
        return protos


def connect_reflection(channel, versions):
    last = None
    for package in (f"grpc.reflection.{v}" for v in versions):
        reflection = Reflection(channel, package)
        try:
            return reflection, reflection.services()
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            last = e
    raise RuntimeError(f"the server implements no server reflection: {last}")


def load_pool(reflection, symbol):
    """A pool holding the file that defines `symbol` and every file it depends on."""
    files = {fd.name: fd for fd in reflection.files(file_containing_symbol=symbol)}
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added:
            return
        if name not in files:
            for fd in reflection.files(file_by_filename=name):
                files.setdefault(fd.name, fd)
        fd = files[name]
        for dependency in fd.dependency:
            add(dependency)
        pool.Add(fd)
        added.add(name)

    for name in list(files):
        add(name)
    return pool


def main():
    parser = argparse.ArgumentParser(description="dagsync interop client (grpcio + reflection)")
    parser.add_argument("target", help="HOST:PORT of a dagsync server")
    parser.add_argument("start", type=int, nargs="?", default=1)
    parser.add_argument("end", type=int, nargs="?", default=5)
    parser.add_argument("--reflection", choices=["v1", "v1alpha"], help="use only this version")
    args = parser.parse_args()
    versions = [args.reflection] if args.reflection else ["v1", "v1alpha"]
    start, end = args.start, args.end
    with grpc.insecure_channel(args.target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        reflection, services = connect_reflection(channel, versions)
        service_name = "dagsync.v1.StateSync"
        if service_name not in services:
            raise RuntimeError(f"{service_name} is not among the reflected services {services}")
        pool = load_pool(reflection, service_name)
        service = pool.FindServiceByName(service_name)

        def unary(method_name, **fields):
            method = service.methods_by_name[method_name]
            request_class = message_class(method.input_type)
            response_class = message_class(method.output_type)
            call = channel.unary_unary(
                f"/{service.full_name}/{method.name}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_class.FromString,
            )
            return call(request_class(**fields), timeout=10)

        availability = unary("GetCommitAvailability")
        fetched = unary("FetchCommits", start=start, end=end)
        digests = [hashlib.sha256(c.SerializeToString()).hexdigest() for c in fetched.commits]
        print(
            json.dumps(
                {
                    "reflection": reflection.version,
                    "services": services,
                    "highest": availability.highest_synced_commit,
                    "lowest": availability.lowest_available_commit,
                    "epoch": availability.epoch,
                    "genesis_digest": availability.genesis_digest.hex(),
                    "commits": len(fetched.commits),
                    "indices": [c.index for c in fetched.commits],
                    "commit_sha256": digests,
                    "certifier_blocks": len(fetched.certifier_blocks),
                }
            )
        )


if __name__ == "__main__":
    main()
