#!/usr/bin/env bash
# preprocess_e2e.sh: orthotron_preprocess end to end, checked by readers that share no code with it:
# a Python reader of Megatron's .idx/.bin (standard library struct only) and libsentencepiece's own
# spm_encode command.
#   1. byte tokenizer on a jsonl file and a text file: every document's tokens are its UTF-8 bytes
#      followed by the eod id 256, in input order;
#   2. --train-tokenizer (SentencePiece BPE): document count, eod at the end of every document, total
#      tokens = .bin size / dtype size, and the tokens of single-line documents equal spm_encode's ids
#      for the same text with the trained model; the same run with --tokenizer-model gives the same bytes;
#   3. a bad jsonl record: exit status 1, a message naming file:line, and no output files;
#      a usage error: exit status 2.
# Usage: preprocess_e2e.sh <orthotron_preprocess>
set -euo pipefail
PRE="$1"
command -v spm_encode >/dev/null || { echo "spm_encode not found (Debian package sentencepiece)"; exit 1; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/preprocess_e2e.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# Inputs: 300 seeded pseudo-English documents (the first 20 on one line, the rest with newlines and
# non-ASCII text), and one text file that is a document of its own.
python3 - <<'EOF'
import json, random
rng = random.Random(7)
words = ("the model reads every document and writes tokens to a binary file while each rank owns "
         "one matrix of weights gradient descent learns slowly from data über naïve café 東京").split()
with open("docs.jsonl", "w", encoding="utf-8") as f:
    for d in range(300):
        sentences = []
        for _ in range(rng.randint(2, 8)):
            s = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14)))
            sentences.append(s[0].upper() + s[1:] + ".")
        sep = " " if d < 20 else rng.choice([" ", "\n", "\n\n"])
        f.write(json.dumps({"id": d, "text": sep.join(sentences)}, ensure_ascii=(d % 2 == 0)) + "\n")
with open("extra.txt", "w", encoding="utf-8") as f:
    f.write("A whole file is one document.\nIt has two lines, and a tab\there.\n")
EOF

cat > check.py <<'EOF'
import json, struct, sys

DTYPES = {1: ("B", 1), 2: ("b", 1), 3: ("h", 2), 4: ("i", 4), 5: ("q", 8), 8: ("H", 2)}

def read_dataset(prefix):
    """Megatron's MMIDIDX index: magic, version, dtype, sizes, pointers, document indices."""
    with open(prefix + ".idx", "rb") as f:
        idx = f.read()
    assert idx[:9] == b"MMIDIDX\x00\x00", "bad magic"
    version, = struct.unpack_from("<Q", idx, 9)
    assert version == 1, version
    code, = struct.unpack_from("<B", idx, 17)
    nseq, ndoc = struct.unpack_from("<QQ", idx, 18)
    off = 34
    sizes = struct.unpack_from(f"<{nseq}i", idx, off); off += 4 * nseq
    pointers = struct.unpack_from(f"<{nseq}q", idx, off); off += 8 * nseq
    doc_idx = struct.unpack_from(f"<{ndoc}q", idx, off); off += 8 * ndoc
    assert off == len(idx), f"{len(idx) - off} trailing bytes in .idx"
    fmt, width = DTYPES[code]
    with open(prefix + ".bin", "rb") as f:
        binary = f.read()
    assert len(binary) == sum(sizes) * width, f".bin has {len(binary)} bytes, sizes say {sum(sizes) * width}"
    assert list(doc_idx) == list(range(nseq + 1)), "expected one sequence per document"
    docs = []
    for size, ptr in zip(sizes, pointers):
        docs.append(list(struct.unpack_from(f"<{size}{fmt}", binary, ptr)))
    return code, docs

def texts():
    out = [json.loads(line)["text"] for line in open("docs.jsonl", encoding="utf-8")]
    return out

mode = sys.argv[1]
if mode == "byte":
    code, docs = read_dataset("byte")
    expected = texts() + [open("extra.txt", encoding="utf-8").read()]
    assert code == 8, f"dtype code {code}, expected 8 (uint16) for vocab 257"
    assert len(docs) == len(expected), (len(docs), len(expected))
    for k, (got, text) in enumerate(zip(docs, expected)):
        assert got == list(text.encode("utf-8")) + [256], f"document {k}: tokens differ from its bytes + eod"
    print(f"byte: {len(docs)} documents, {sum(map(len, docs))} tokens match the UTF-8 bytes + eod")
elif mode == "sp":
    code, docs = read_dataset("sp")
    assert code == 8, f"dtype code {code}, expected 8 (uint16) for vocab 320"
    assert len(docs) == 300, len(docs)
    for k, d in enumerate(docs):
        assert len(d) >= 2 and d[-1] == 2 and 2 not in d[:-1], f"document {k}: eod (2) only at the end"
        assert all(0 <= t < 320 for t in d), f"document {k}: id outside the vocabulary"
    ref = [list(map(int, line.split())) for line in open("spm_ids.txt")]
    assert len(ref) == 20
    for k in range(20):
        assert docs[k][:-1] == ref[k], f"document {k}: tokens differ from spm_encode:\n{docs[k][:12]}\n{ref[k][:12]}"
    total = sum(map(len, docs))
    print(f"sentencepiece: 300 documents, {total} tokens; the first 20 match spm_encode, first ids {docs[0][:8]}")
EOF

echo "== 1. byte tokenizer"
"$PRE" --input docs.jsonl --input extra.txt --output-prefix byte --tokenizer byte --workers 2 | tee byte.out
grep -q "301 documents" byte.out
python3 check.py byte

echo "== 2. SentencePiece BPE trained on the inputs"
"$PRE" --input docs.jsonl --output-prefix sp --tokenizer sentencepiece --train-tokenizer --vocab-size 320 \
  --tokenizer-prefix tok --workers 2 | tee sp.out
grep -q "trained tokenizer tok.model" sp.out
test ! -e tok.train.txt  # the training text is removed
python3 -c 'import json
for line in list(open("docs.jsonl", encoding="utf-8"))[:20]: print(json.loads(line)["text"])' >first20.txt
spm_encode --model tok.model --output_format id <first20.txt >spm_ids.txt
python3 check.py sp
"$PRE" --input docs.jsonl --output-prefix sp_again --tokenizer sentencepiece --tokenizer-model tok.model --quiet
cmp sp.bin sp_again.bin && cmp sp.idx sp_again.idx
echo "same bytes with --tokenizer-model"

echo "== 3. errors"
head -2 docs.jsonl >bad.jsonl
echo '{"text": 5}' >>bad.jsonl
set +e
"$PRE" --input bad.jsonl --output-prefix bad --tokenizer byte 2>bad.err
rc=$?
set -e
cat bad.err
[ "$rc" -eq 1 ] || { echo "expected exit status 1 for a bad record, got $rc"; exit 1; }
grep -q "bad.jsonl:3" bad.err || { echo "the message does not name bad.jsonl:3"; exit 1; }
if ls bad.* | grep -q -E "\.(bin|idx)"; then echo "output files left behind: $(ls bad.*)"; exit 1; fi
printf '{"text": "ok"}\nnot json\n' >bad2.jsonl
if "$PRE" --input bad2.jsonl --output-prefix bad2 --tokenizer byte 2>bad2.err; then echo "accepted invalid JSON"; exit 1; fi
grep -q "bad2.jsonl:2" bad2.err || { cat bad2.err; echo "the message does not name bad2.jsonl:2"; exit 1; }
set +e
"$PRE" --input docs.jsonl --output-prefix x --tokenizer gpt2 2>usage.err
rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "gpt2" usage.err || { cat usage.err; echo "expected a usage error (2), got $rc"; exit 1; }
echo "preprocess_e2e: OK"
