"""One small valid file per format, for the fuzzers to mutate; and the mutation strategies.

Seeds are written by the real libraries where one is installed (pickle, zipfile, tarfile,
numpy, h5py, onnx) and by hand otherwise. Hostile seeds (a REDUCE of `os.system`) are
included on purpose so that mutations reach the scanners' reporting paths; they are only
ever dumped, never loaded.
"""

from __future__ import annotations

import bz2
import collections
import datetime
import gzip
import io
import json
import lzma
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np
from hypothesis import strategies as st


class SystemCall:
    """Pickles as `posix.system("true")`."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


class WithState:
    """An instance with state: pickled through copyreg and BUILD."""

    def __init__(self) -> None:
        self.weights = [0.5, 1.5]
        self.name = "w"


SAMPLE = {
    "ints": [0, 1, -1, 255, 65535, 2**31, -(2**63), 2**100],
    "floats": (0.5, -1e300, float("inf")),
    "text": "héllo \u2603",
    "bytes": b"\x00\x01 raw",
    "flags": [True, False, None],
    "nested": {"a": {"b": [(), (1,), (1, 2), (1, 2, 3)]}},
    "set": {1, 2},
    "frozen": frozenset({"x"}),
    "bytearray": bytearray(b"ba"),
    "ordered": collections.OrderedDict(z=1),
    "date": datetime.date(2024, 1, 2),
}
_shared = [1, 2]
SAMPLE["shared"] = [_shared, _shared]  # memo PUT/GET

PICKLES = [pickle.dumps(SAMPLE, protocol=p) for p in range(6)]
HOSTILE_PICKLES = [pickle.dumps({"model": SystemCall(), "state": WithState()}, protocol=p) for p in (0, 1, 2, 4)]
# Hand-written streams for opcodes that pickle.dumps never emits for plain data.
HAND_PICKLES = [
    b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x85R.",
    b"(S'true'\niposix\nsystem\n.",
    b"\x80\x02cbuiltins\nlist\n)\x81}b\x82\x01\x83\x01\x00\x84\x01\x00\x00\x00Q.",
    b"\x80\x05\x96\x02\x00\x00\x00\x00\x00\x00\x00ab\x97\x98(K\x01K\x021\x8f(K\x01\x90(K\x02\x91.",
    b"(I1\np0\nL2L\nF1.5\nS'a'\nVb\nP1\ng0\nNt.",
]
ALL_PICKLES = PICKLES + HOSTILE_PICKLES + HAND_PICKLES


def zip_bytes(members: Sequence[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


ZIPS = [
    zip_bytes(
        [("archive/data.pkl", PICKLES[2]), ("archive/version", b"3\n"), ("archive/data/0", bytes(16))],
        zipfile.ZIP_STORED,
    ),
    zip_bytes([("model.pkl", HOSTILE_PICKLES[2]), ("notes.txt", b"hello\n")]),
    zip_bytes([("a.pkl", PICKLES[4])], zipfile.ZIP_BZIP2),
    zip_bytes([("inner.zip", zip_bytes([("x.pkl", PICKLES[3])]))], zipfile.ZIP_STORED),
]


def tar_bytes(mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]  # mode is a literal at each call
        for name, data in (("model.pkl", PICKLES[2]), ("evil.pkl", HOSTILE_PICKLES[2])):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../etc/passwd"
        archive.addfile(link)
    return buffer.getvalue()


TARS = [tar_bytes("w"), tar_bytes("w:gz")]

COMPRESSED: dict[str, bytes] = {
    "gzip": gzip.compress(HOSTILE_PICKLES[2]),
    "bzip2": bz2.compress(PICKLES[2]),
    "xz": lzma.compress(PICKLES[4]),
    "zlib": zlib.compress(HOSTILE_PICKLES[3]),
}
try:
    import lz4.frame
except ImportError:  # optional: Bastion reports lz4 data as unsupported without it
    pass
else:
    COMPRESSED["lz4"] = lz4.frame.compress(PICKLES[2])


def npy_bytes(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=True)  # writes; never reads
    return buffer.getvalue()


NPYS = [
    npy_bytes(np.arange(6, dtype=np.float32)),
    npy_bytes(np.array([{"a": 1}, None, SystemCall()], dtype=object)),
    npy_bytes(np.zeros(2, dtype=[("a", "<f4"), ("b", "O")]), version=(2, 0)),
]
NPY_OBJECT = NPYS[1]


def safetensors_bytes(header: dict[str, object], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


SAFETENSORS = [
    safetensors_bytes(
        {
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "b": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]},
        },
        bytes(range(24)),
    ),
    safetensors_bytes({"empty": {"dtype": "BF16", "shape": [0], "data_offsets": [0, 0]}}, b""),
]


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_bytes(version: int = 3, template: str = "{% for m in messages %}{{ m.content }}{% endfor %}") -> bytes:
    kvs = [
        (b"general.architecture", 8, _gguf_string("llama")),
        (b"general.alignment", 4, struct.pack("<I", 32)),
        (b"tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<3f", 0.0, -1.0, 2.5)),
        (b"tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2) + _gguf_string("<s>") + _gguf_string("</s>")),
        (b"tokenizer.chat_template", 8, _gguf_string(template)),
    ]
    out = b"GGUF" + struct.pack("<I", version) + struct.pack("<QQ", 0, len(kvs))
    for key, vtype, payload in kvs:
        out += struct.pack("<Q", len(key)) + key + struct.pack("<I", vtype) + payload
    return out


GGUFS = [gguf_bytes(3), gguf_bytes(2, "{{ self.__init__.__globals__.os.popen('id') }}")]

KERAS_CONFIG = {
    "class_name": "Sequential",
    "config": {
        "name": "seq",
        "layers": [
            {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 2}},
            {"module": "keras.layers", "class_name": "Lambda", "config": {"name": "l", "function": "4wEAAAAA"}},
            {"module": "builtins", "class_name": "function", "config": "eval", "registered_name": "function"},
        ],
    },
}
KERAS_JSON = [json.dumps(KERAS_CONFIG).encode(), json.dumps({"class_name": "Functional", "config": {}}).encode()]


def hdf5_bytes() -> bytes:
    try:
        import h5py  # noqa: PLC0415  # optional: a hand-made file stands in without it
    except ImportError:
        return b"\x89HDF\r\n\x1a\n" + bytes(56) + json.dumps(KERAS_CONFIG).encode() + b"\x00" * 8
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.attrs["model_config"] = json.dumps(KERAS_CONFIG)
        handle.attrs["keras_version"] = "2.15.0"
        handle.create_dataset("weights", data=np.arange(4, dtype=np.float32))
    return buffer.getvalue()


HDF5S = [hdf5_bytes()]


# -- protobuf, written by hand (and by onnx when installed) ------------------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def pb_len(number: int, payload: bytes | str) -> bytes:
    raw = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def pb_int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _onnx_by_hand() -> bytes:
    relu = pb_len(1, "x") + pb_len(2, "y") + pb_len(4, "Relu")
    custom = pb_len(1, "y") + pb_len(2, "z") + pb_len(4, "PyOp") + pb_len(7, "ai.onnx.contrib")
    external = pb_len(13, pb_len(1, "location") + pb_len(2, "../../weights.bin"))
    initializer = pb_len(1, "w") + pb_len(8, "w") + external
    graph = pb_len(1, relu) + pb_len(1, custom) + pb_len(2, "g") + pb_len(5, initializer)
    return pb_int(1, 8) + pb_len(7, graph) + pb_len(8, pb_len(1, "") + pb_int(2, 17))


def _onnx_by_library() -> bytes | None:
    try:
        from onnx import TensorProto, helper  # noqa: PLC0415  # optional
    except ImportError:
        return None
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.float_data[:]
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../outside.bin"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Custom", ["y"], ["z"], domain="my.ops")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])],
        [tensor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    return bytes(model.SerializeToString())


def _tf_graph() -> bytes:
    nodes = [("c", "Const"), ("r", "ReadFile"), ("p", "PyFunc")]
    return b"".join(pb_len(1, pb_len(1, name) + pb_len(2, op)) for name, op in nodes) + pb_len(4, pb_int(1, 1))


ONNXS = [_onnx_by_hand()] + ([m] if (m := _onnx_by_library()) else [])
TF_GRAPHS = [_tf_graph(), pb_int(1, 1) + pb_len(2, pb_len(2, _tf_graph()))]  # GraphDef, SavedModel

NOTEBOOK = json.dumps(
    {
        "cells": [
            {
                "cell_type": "code",
                "source": ["import os\n", "x = 1\n"],
                "outputs": [{"output_type": "stream", "text": ["hi\n"]}],
            },
            {"cell_type": "markdown", "source": "# title\ntoken = ghp_" + "a" * 36},
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
).encode()
TEXTS = [NOTEBOOK, b"aws_secret_access_key = " + b"A" * 40 + b"\nplain text\n", b"hf_" + b"b" * 34 + b" and more"]

MAGICS = [
    b"\x80\x02",
    b"\x80\x05",
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"\x93NUMPY\x01\x00",
    b"\x93NUMPY\x02\x00",
    b"\x1f\x8b\x08\x00",
    b"BZh9",
    b"\xfd7zXZ\x00",
    b"\x04\x22\x4d\x18",
    b"\x78\x9c",
    b"GGUF\x03\x00\x00\x00",
    b"\x89HDF\r\n\x1a\n",
    b'{"class_name": ',
    b'{"cells": [',
    b"\x08\x08\x3a",
    b"(cos\nsystem\n",
]

# -- mutations ---------------------------------------------------------------------------
INTERESTING = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0xFFFF,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    2**32,
    2**40,
    2**60,
    2**63 - 1,
    2**64 - 1,
]
_WIDTHS = [(1, "<B"), (2, "<H"), (4, "<I"), (8, "<Q")]
_KINDS = ("flip", "set", "truncate", "insert", "delete", "splice", "number")


@st.composite
def mutants(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A seed with one to four mutations: flipped and set bytes, cuts, inserts, splices, big numbers."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(_KINDS))
        size = len(data)
        pos = draw(st.integers(0, size))
        if kind == "flip" and size:
            data[min(pos, size - 1)] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and size:
            data[min(pos, size - 1)] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif kind == "splice":
            start = draw(st.integers(0, size))
            data[pos:pos] = data[start : start + draw(st.integers(1, 256))]
        elif kind == "number":
            width, fmt = draw(st.sampled_from(_WIDTHS))
            value = draw(st.sampled_from(INTERESTING)) & ((1 << (8 * width)) - 1)
            data[pos : pos + width] = struct.pack(fmt, value)
    return bytes(data)


def fuzz_bytes(seeds: Sequence[bytes], max_random: int = 1024) -> st.SearchStrategy[bytes]:
    """Mutated seeds, random bytes, and random bytes behind a known format's magic."""
    prefixed = st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGICS), st.binary(max_size=512))
    return st.one_of(mutants(seeds), st.binary(max_size=max_random), prefixed)
