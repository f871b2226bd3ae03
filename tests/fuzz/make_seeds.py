#!/usr/bin/env python3
"""Writes the seed corpus of the libFuzzer harnesses (tests/fuzz/corpus/), standard library only.

    python3 tests/fuzz/make_seeds.py        # rewrites tests/fuzz/corpus/{safetensors,yaml}/

The generated files are committed; rerun after editing the seeds below. Each seed is small: the
fuzzer mutates them, so they only need to reach each branch of the readers, not to be realistic.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def safetensors(header, data=b"", header_text=None):
    """A safetensors file: u64 little-endian header length, the JSON header, the data bytes."""
    text = header_text if header_text is not None else json.dumps(header, separators=(",", ":"))
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw + data


def f32(*values):
    return struct.pack("<%df" % len(values), *values)


SAFETENSORS = {
    # Valid files.
    "valid_empty_with_metadata": safetensors({"__metadata__": {"format": "pt", "step": "7"}}),
    "valid_one_f32": safetensors({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}},
                                 f32(1.0, -2.0, 3.5, 0.25)),
    "valid_two_tensors": safetensors({
        "layer.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "layer.bias": {"dtype": "F32", "shape": [3], "data_offsets": [24, 36]},
    }, f32(*range(9))),
    "valid_bf16": safetensors({"e": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]},
                               "__metadata__": {"dtype": "bfloat16"}},
                              struct.pack("<4H", 0x3F80, 0xC000, 0x4040, 0x0000)),
    "valid_zero_size": safetensors({
        "empty": {"dtype": "F32", "shape": [0, 5], "data_offsets": [0, 0]},
        "scalar": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]},
    }, struct.pack("<q", -3)),
    "valid_all_dtypes": safetensors({
        "a": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]},
        "b": {"dtype": "F16", "shape": [1], "data_offsets": [8, 10]},
        "c": {"dtype": "I32", "shape": [1], "data_offsets": [10, 14]},
        "d": {"dtype": "I16", "shape": [1], "data_offsets": [14, 16]},
        "e": {"dtype": "I8", "shape": [1], "data_offsets": [16, 17]},
        "f": {"dtype": "U8", "shape": [1], "data_offsets": [17, 18]},
        "g": {"dtype": "BOOL", "shape": [1], "data_offsets": [18, 19]},
    }, bytes(range(19))),
    # Invalid files, each refused for one reason.
    "bad_duplicate_key": safetensors(None, f32(1.0), header_text=(
        '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        '"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}')),
    "bad_overlapping_offsets": safetensors({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }, f32(1, 2, 3)),
    "bad_gap": safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, f32(1, 2)),
    "bad_trailing_bytes": safetensors({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\x01\x02"),
    "bad_span_mismatch": safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}, f32(1, 2)),
    "bad_unknown_dtype": safetensors({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\x00"),
    "bad_negative_dim": safetensors({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}, b"\x00"),
    "bad_huge_shape": safetensors({"a": {"dtype": "F64", "shape": [4294967296, 4294967296],
                                         "data_offsets": [0, 8]}}, f32(0, 0)),
    "bad_extra_field": safetensors({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "x": 1}}, b"\x00"),
    "bad_metadata_value": safetensors({"__metadata__": {"step": 7}}),
    "bad_deep_nesting": safetensors(None, header_text="{\"__metadata__\":" + "[" * 70 + "]" * 70 + "}"),
    "bad_not_object": safetensors(None, header_text="[1, 2, 3]"),
    "bad_header_too_long": struct.pack("<Q", 1 << 40) + b"{}",
    "bad_short": b"\x02\x00\x00",
    "bad_float_offset": safetensors({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1.0]}}, b"\x00"),
}

OPTS_ALL = """\
# every field of the harness's options struct
name: fuzz
opts:
  lr: 0.02
  steps: 5
  nesterov: true
  schedule: custom
  betas: [0.9, 0.95]
  coefficients:
    - [3.4445, -4.775, 2.0315]
    - [2.0, -1.5, 0.5]
  weight_decay: 0.1
misc:
  x: 0.5
  n: -2
  flag: yes
  name: beta
  tags: [a, b]
  pair: [1, 2e-3]
"""

YAML = {
    "valid_all_fields.yaml": OPTS_ALL,
    "valid_defaults.yaml": "opts: {}\n",
    "valid_block_lists.yaml": "opts:\n  schedule: slow\n  betas:\n    - 0.5\n    - 0.999\n  steps: 100\n",
    "valid_empty.yaml": "",
    "typo_key.yaml": "opts:\n  lr: 0.1\n  nesterv: false\n",
    "typo_choice.yaml": "opts:\n  schedule: fsat\n",
    "typo_section.yaml": "optz:\n  lr: 0.1\n",
    "wrong_types.yaml": "opts:\n  lr: fast\n  steps: 2.5\n  nesterov: maybe\n  betas: 0.9\n",
    "out_of_range.yaml": "opts:\n  lr: 11\n  steps: 0\n  betas: [0.9, 1.0]\n  weight_decay: .inf\n",
    "cross_field.yaml": "opts:\n  lr: 5\n  weight_decay: 1\n",
    "custom_without_coefficients.yaml": "opts:\n  schedule: custom\n",
    "coefficients_not_custom.yaml": "opts:\n  coefficients: [[1, 2, 3]]\n",
    "bad_triple.yaml": "opts:\n  schedule: custom\n  coefficients: [[1, 2], [1, 2, .nan]]\n",
    "duplicate_key.yaml": "opts:\n  lr: 0.1\n  lr: 0.2\n",
    "duplicate_top.yaml": "opts: {}\nopts: {}\n",
    "anchors.yaml": "base: &b {lr: 0.1, steps: 3}\nopts: *b\nmisc:\n  tags: &t [x, y]\n  pair: [1, 2]\n",
    "alias_fanout.yaml": ("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                        "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"),
    # Seven levels of ten: over a million nodes once aliases are expanded, refused by the node budget.
    "alias_bomb.yaml": "".join("l%d: &l%d [%s]\n" % (i, i, ", ".join(["*l%d" % (i - 1)] * 10)) for i in range(1, 7))
    .replace("*l0", "x") + "top: [" + ", ".join(["*l6"] * 10) + "]\n",
    "self_alias.yaml": "opts: &o [*o]\n",
    "second_document.yaml": "opts: {lr: 0.1}\n---\nopts: {lr: 0.2}\n",
    "deep_nesting.yaml": "opts:\n  lr: " + "[" * 40 + "]" * 40 + "\n",
    "deep_block_nesting.yaml": "".join("  " * i + "k%d:\n" % i for i in range(40)) + "  " * 40 + "v\n",
    "top_level_list.yaml": "- opts\n- lr\n",
    "complex_key.yaml": "? [a, b]\n: 1\nopts: {}\n",
    "null_key.yaml": ": 1\nopts: {}\n",
    "tags_and_scalars.yaml": "opts:\n  lr: !!float 1e-3\n  steps: 0x10\n  nesterov: off\n  schedule: \"slow\"\n"
                             "  betas: [+.5, 0.25]\n  weight_decay: 'x'\n",
    "syntax_error.yaml": "opts: [lr: 0.1\n  steps: {\n",
    # Regressions: yaml-cpp 0.7's LoadAll looped forever on these (see README.md, findings).
    "regression_loadall_tag.yaml": "!x, 1]\n",
    "regression_loadall_comma.yaml": ",\n",
    "flow_mapping.yaml": "{opts: {lr: 1e-2, steps: 7, nesterov: false, betas: [0.8, 0.9]}}\n",
}


def write_all(subdir, files, mode):
    folder = os.path.join(CORPUS, subdir)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    for name, content in sorted(files.items()):
        with open(os.path.join(folder, name), mode) as f:
            f.write(content)


def main():
    write_all("safetensors", {name + ".safetensors": data for name, data in SAFETENSORS.items()}, "wb")
    write_all("yaml", YAML, "w")
    total = 0
    for root, _, names in os.walk(CORPUS):
        total += sum(os.path.getsize(os.path.join(root, n)) for n in names)
    print("wrote %d safetensors and %d YAML seeds (%d bytes) under %s" % (len(SAFETENSORS), len(YAML), total, CORPUS))


if __name__ == "__main__":
    main()
