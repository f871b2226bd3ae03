#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_indexed_dataset (tests/fuzz/corpus/indexed_dataset/), standard library only.

    python3 tests/fuzz/make_idx_seeds.py     # rewrites tests/fuzz/corpus/indexed_dataset/

Each seed is a Megatron .idx image (magic, u64 version, u8 dtype code, u64 sequence count N, u64
document count D, int32 sizes[N], int64 pointers[N], int64 document_indices[D]; little-endian, no
padding). The generated files are committed; rerun after editing the seeds below. They are small: the
fuzzer mutates them, so they only need to reach each branch of the parser.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FOLDER = os.path.join(HERE, "corpus", "indexed_dataset")
MAGIC = b"MMIDIDX\x00\x00"
ITEM = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 8, 7: 4, 8: 2}


def idx(sizes, code=8, documents=None, pointers=None, version=1, n=None, d=None, magic=MAGIC):
    """An .idx image; by default consistent (pointers from sizes, one sequence per document)."""
    if documents is None:
        documents = list(range(len(sizes) + 1))
    if pointers is None:
        pointers, offset = [], 0
        for s in sizes:
            pointers.append(offset)
            offset += s * ITEM.get(code, 1)
    out = magic + struct.pack("<QB", version, code)
    out += struct.pack("<QQ", len(sizes) if n is None else n, len(documents) if d is None else d)
    out += struct.pack("<%di" % len(sizes), *sizes)
    out += struct.pack("<%dq" % len(pointers), *pointers)
    out += struct.pack("<%dq" % len(documents), *documents)
    return out


SEEDS = {
    # Valid indexes.
    "valid_empty": idx([]),
    "valid_uint16": idx([3, 0, 5, 1]),
    "valid_uint8": idx([4, 2], code=1),
    "valid_int8": idx([1, 1, 1], code=2),
    "valid_int16": idx([2, 7], code=3),
    "valid_int32": idx([6, 0, 2], code=4),
    "valid_int64": idx([1, 3], code=5),
    "valid_float32": idx([2], code=7),
    "valid_float64": idx([2], code=6),
    "valid_multi_sequence_documents": idx([1, 2, 0, 3, 1], documents=[0, 2, 2, 4, 5]),
    "valid_empty_documents_only": idx([0, 0, 0]),
    # Invalid ones, each refused for one reason.
    "bad_magic": idx([1], magic=b"MMIDIDY\x00\x00"),
    "bad_version": idx([1], version=2),
    "bad_dtype_zero": idx([1], code=0),
    "bad_dtype_nine": idx([1], code=9),
    "bad_huge_sequence_count": idx([1], n=1 << 62),
    "bad_huge_document_count": idx([1], d=(1 << 64) - 1),
    "bad_zero_documents": idx([], documents=[], d=0),
    "bad_trailing_bytes": idx([2, 2]) + b"\x00\x01",
    "bad_negative_size": idx([2, -1, 3]),
    "bad_pointer_start": idx([2, 2], pointers=[2, 6]),
    "bad_pointers_decrease": idx([2, 2, 2], pointers=[0, 4, 2]),
    "valid_huge_sizes": idx([0x7FFFFFFF] * 3, code=5),  # a 48 GiB .bin: parsed, too big to synthesize
    "bad_documents_not_from_zero": idx([1, 1], documents=[1, 2]),
    "bad_documents_decrease": idx([1, 1, 1], documents=[0, 2, 1, 3]),
    "bad_documents_past_n": idx([1, 1], documents=[0, 5, 2]),
    "bad_documents_not_to_n": idx([1, 1], documents=[0, 1]),
    "bad_short_header": MAGIC + b"\x01\x00",
    "bad_truncated_arrays": idx([1, 2, 3])[:50],
}


def main():
    os.makedirs(FOLDER, exist_ok=True)
    for name in os.listdir(FOLDER):
        os.remove(os.path.join(FOLDER, name))
    total = 0
    for name, data in SEEDS.items():
        with open(os.path.join(FOLDER, name + ".idx"), "wb") as f:
            f.write(data)
        total += len(data)
    print("wrote %d .idx seeds (%d bytes) under %s" % (len(SEEDS), total, FOLDER))


if __name__ == "__main__":
    main()
