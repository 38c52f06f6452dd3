#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora into fuzz/corpus/<target>/: small, valid inputs of each
kind (and a few near misses) that the fuzzers mutate from. Layouts follow fuzz/targets/targets.h
and docs/protocol.md ("Update encodings"). Deterministic: rerunning rewrites the same files."""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# fuzz_codec: [encoding-1][block index][fraction byte][N u16][mode] then the payload.
# Block indices: 1 -> 2, 4 -> 64, 5 -> 256. Fraction byte 127 -> 0.5.
def codec_seed(encoding, block_idx, frac, n, mode, payload):
    return bytes([encoding - 1, block_idx, frac]) + struct.pack("<HB", n, mode) + payload


def header(encoding, n, k, block):
    return b"FU" + bytes([1, encoding]) + struct.pack("<QII", n, k, block)


def f16(x):
    return struct.pack("<e", x)


vals = [0.5, -1.25, 3.0, 0.0, 2.5]
write("fuzz_codec", "f32_n4", codec_seed(1, 5, 127, 4, 0, struct.pack("<4f", *vals[:4])))
write("fuzz_codec", "f16_n5",
      codec_seed(2, 5, 127, 5, 0, header(2, 5, 0, 0) + b"".join(f16(v) for v in vals)))
# INT8, N=5, B=2: three blocks of [float32 scale][int8 values].
int8_body = (struct.pack("<f", 1.25 / 127) + struct.pack("<bb", 51, -127) +
             struct.pack("<f", 3.0 / 127) + struct.pack("<bb", 127, 0) +
             struct.pack("<f", 2.5 / 127) + struct.pack("<b", 127))
write("fuzz_codec", "int8_n5_b2", codec_seed(3, 1, 127, 5, 0, header(3, 5, 0, 2) + int8_body))
# TOPK, N=8, fraction 0.5 -> k=4.
write("fuzz_codec", "topk_n8_k4",
      codec_seed(4, 5, 127, 8, 0, header(4, 8, 4, 0) + struct.pack("<4I", 0, 2, 5, 7) +
                 struct.pack("<4f", 1.0, -2.0, 0.5, 4.0)))
# TOPK_INT8, N=8, k=4, B=2.
write("fuzz_codec", "topk_int8_n8_k4_b2",
      codec_seed(5, 1, 127, 8, 0, header(5, 8, 4, 2) + struct.pack("<4I", 1, 3, 4, 6) +
                 struct.pack("<f", 2.0 / 127) + struct.pack("<bb", 64, -127) +
                 struct.pack("<f", 4.0 / 127) + struct.pack("<bb", 127, -32)))
write("fuzz_codec", "bad_magic_f16", codec_seed(2, 5, 127, 2, 0, b"XU" + header(2, 2, 0, 0)[2:] +
                                                f16(1.0) + f16(2.0)))
# Mode bit 0x80: the rest is float32 values to encode and decode again.
for enc in range(1, 6):
    write("fuzz_codec", "roundtrip_%d" % enc,
          codec_seed(enc, 4, 80, 0, 0x80 | enc, struct.pack("<6f", 0.1, -7.5, 3.25, 0, 1e-3, 42)))

# fuzz_csv: [options] then the text. Bit 0: label column "y"; bit 1: label names a, b, c.
write("fuzz_csv", "plain", b"\x00" + b"temp,humidity,label\n21.5,0.4,0\n19.0,0.7,1\n")
write("fuzz_csv", "named_y", b"\x03" + b'x1,"x 2",y\r\n1,2,a\r\n3,4,c\r\n5,6,1\r\n\r\n')
write("fuzz_csv", "quoted", b"\x00" + b'"a""b", c ,label\n" 1 ",2e3,2\n-0.5,  7 ,0\n')
write("fuzz_csv", "bad_number", b"\x00" + b"a,label\nabc,1\n")
write("fuzz_csv", "header_only", b"\x02" + b"f,label\n")


# fuzz_upload_chunks: [mode][total u16] then chunks of [op][len][bytes]. Mode bit 0: a part
# file; bit 1 (with a file): resume, the first attempt taking 1 + (mode >> 2) % 8 chunks.
def chunk(data, op=0):
    return bytes([op, len(data)]) + data


write("fuzz_upload_chunks", "memory_three",
      b"\x00" + struct.pack("<H", 10) + chunk(b"abcd") + chunk(b"efgh") + chunk(b"ij"))
write("fuzz_upload_chunks", "file_two",
      b"\x01" + struct.pack("<H", 6) + chunk(b"hello ") )
write("fuzz_upload_chunks", "file_resume",
      b"\x07" + struct.pack("<H", 12) + chunk(b"abc") + chunk(b"def") + chunk(b"gh"))
write("fuzz_upload_chunks", "out_of_order",
      b"\x00" + struct.pack("<H", 10) + chunk(b"abcd") + chunk(b"efgh", op=5))
write("fuzz_upload_chunks", "too_long",
      b"\x00" + struct.pack("<H", 5) + chunk(b"abcd") + chunk(b"efgh"))

# fuzz_rest_json: [Admin method index, in admin.proto order] then the body.
write("fuzz_rest_json", "list_models_empty", b"\x01" + b"")
write("fuzz_rest_json", "list_versions", b"\x02" + b'{"model": "fraud"}')
write("fuzz_rest_json", "get_version", b"\x03" + b'{"model":"m","version":"3","offset":0}')
write("fuzz_rest_json", "start_job", b"\x05" + json.dumps({"spec": {
    "model": "m", "rounds": 3, "learning_rate": 0.05, "optimizer": "adam",
    "selector": {"site": "north"}, "seed": "18446744073709551615"}}).encode())
write("fuzz_rest_json", "register_header", b"\x00" + json.dumps({"header": {
    "name": "m", "builtin": {"architecture": "mlp", "hidden": [8]},
    "contract": {"feature_names": ["a", "b"], "labels": ["x", "y"]}}}).encode())
write("fuzz_rest_json", "unknown_field", b"\x01" + b'{"nope": 1}')

# fuzz_contract: the contract JSON as it travels inside archives.
write("fuzz_contract", "mlp", json.dumps({
    "task": "classification", "feature_names": ["t", "h", "p"], "labels": ["ok", "fault"],
    "normalization": {"mean": [20.5, 0.5, 1013], "std": [3, 0.1, 8.5], "in_module": True},
    "loss": "cross_entropy", "architecture": "mlp"}))
write("fuzz_contract", "conv1d", json.dumps({
    "feature_names": ["a0", "a1", "b0", "b1"], "labels": ["x", "y", "z"],
    "architecture": "conv1d", "window": 2}))
write("fuzz_contract", "special_floats", '{"normalization": {"mean": ["NaN", "Infinity"], '
      '"std": [1e-45, "-Infinity"]}, "window": -1, "labels": ["a"]}')
write("fuzz_contract", "not_json", "{\"feature_names\": [\"a\"")
