"""tf.train.Example without importing TensorFlow (5 CPU-seconds per Beam worker here).

The message types are declared from TensorFlow's example.proto/feature.proto field numbers in a
private descriptor pool, so the wire format is the same as TensorFlow's (tests/test_records.py
checks byte equality against tf.train.Example) and a process that also imports TensorFlow sees
no clash of names.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _message(file, name: str, fields: list[tuple], oneof: str | None = None):
    message = file.message_type.add(name=name)
    if oneof:
        message.oneof_decl.add(name=oneof)
    for field_name, number, kind, label, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
        if oneof:
            field.oneof_index = 0
    return message


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="example.proto", package="tfexample",
                                              syntax="proto3")
    rep, opt = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    _message(file, "BytesList", [("value", 1, _F.TYPE_BYTES, rep, None)])
    _message(file, "FloatList", [("value", 1, _F.TYPE_FLOAT, rep, None)])
    _message(file, "Int64List", [("value", 1, _F.TYPE_INT64, rep, None)])
    _message(file, "Feature", [("bytes_list", 1, _F.TYPE_MESSAGE, opt, ".tfexample.BytesList"),
                               ("float_list", 2, _F.TYPE_MESSAGE, opt, ".tfexample.FloatList"),
                               ("int64_list", 3, _F.TYPE_MESSAGE, opt, ".tfexample.Int64List")],
             oneof="kind")
    features = _message(file, "Features", [("feature", 1, _F.TYPE_MESSAGE, rep,
                                            ".tfexample.Features.FeatureEntry")])
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=opt,
                    type_name=".tfexample.Feature")
    _message(file, "Example", [("features", 1, _F.TYPE_MESSAGE, opt, ".tfexample.Features")])
    return file


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file())
Example = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tfexample.Example"))
Features = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tfexample.Features"))
Feature = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tfexample.Feature"))
BytesList = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tfexample.BytesList"))
Int64List = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tfexample.Int64List"))
