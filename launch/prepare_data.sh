#!/usr/bin/env bash
# launch/prepare_data.sh: the bundled training data, built once and cached outside the checkout.
#   1. the corpus (launch/build_corpus.py): <cache>/corpus-<key>/{train,valid}.jsonl from Debian's
#      python3.11-doc and linux-doc-6.1 (<key> names both package versions and the script's hash);
#   2. a SentencePiece BPE tokenizer of vocab $VOCAB trained on train.jsonl, and both splits
#      tokenized by orthotron_preprocess: <cache>/data-<key>-sp<VOCAB>/{train,valid}.{bin,idx},
#      tokenizer.model, tokenizer.vocab, manifest.txt (figures and timings).
# Idempotent: a directory is reused when its .complete marker exists; it is built under .tmp and
# renamed, so an interrupted run leaves nothing half-written behind. Prints where everything is.
#
#   bash launch/prepare_data.sh                 # needs build/bin/orthotron_preprocess
#   ORTHOTRON_CACHE=/path ...                   # cache root (default ~/.cache/orthotron)
#   ORTHOTRON_BUILD_DIR=/path ...               # where orthotron_preprocess was built (default build/)
#   ORTHOTRON_VOCAB=4096 ...                    # vocabulary of the trained tokenizer
#   ORTHOTRON_SP_SENTENCES=1000000 ...          # lines sampled to train the tokenizer (0: all)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ORTHOTRON_CACHE:-$HOME/.cache/orthotron}"
BUILD="${ORTHOTRON_BUILD_DIR:-$ROOT/build}"
VOCAB="${ORTHOTRON_VOCAB:-4096}"
SENTENCES="${ORTHOTRON_SP_SENTENCES:-1000000}"
PREPROCESS="$BUILD/bin/orthotron_preprocess"
export ORTHOTRON_CACHE="$CACHE"

log() { printf '[data] %s\n' "$*" >&2; }
die() { printf '[data] error: %s\n' "$*" >&2; exit 1; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

[ -x "$PREPROCESS" ] || die "$PREPROCESS not found: build it first (bash launch/setup.sh, or cmake --build $BUILD --target orthotron_preprocess)"
command -v python3 >/dev/null || die "python3 not found"

# 1. The corpus (reused when complete).
t0=$(date +%s.%N)
CORPUS="$(python3 "$ROOT/launch/build_corpus.py")"
t1=$(date +%s.%N)
KEY="$(basename "$CORPUS")"
KEY="${KEY#corpus-}"
DATA="$CACHE/data-$KEY-sp$VOCAB"

# 2. Tokenizer and tokenized splits.
if [ -f "$DATA/.complete" ]; then
  log "reusing $DATA"
else
  log "tokenizing into $DATA (SentencePiece BPE, vocab $VOCAB)"
  TMP="$DATA.tmp"
  rm -rf "$TMP"
  mkdir -p "$TMP"
  s0=$(date +%s.%N)
  "$PREPROCESS" --input "$CORPUS/train.jsonl" --output-prefix "$TMP/train" --tokenizer sentencepiece \
    --train-tokenizer --vocab-size "$VOCAB" --tokenizer-prefix "$TMP/tokenizer" \
    --input-sentence-size "$SENTENCES" | tee "$TMP/train.summary" >&2
  s1=$(date +%s.%N)
  "$PREPROCESS" --input "$CORPUS/valid.jsonl" --output-prefix "$TMP/valid" --tokenizer sentencepiece \
    --tokenizer-model "$TMP/tokenizer.model" | tee "$TMP/valid.summary" >&2
  s2=$(date +%s.%N)
  {
    echo "corpus: $CORPUS"
    echo "vocab: $VOCAB (SentencePiece BPE, byte fallback, eod = </s> = id 2)"
    echo "tokenizer training sample: $SENTENCES lines"
    echo "train (tokenizer training + tokenizing), seconds: $(secs "$s0" "$s1")"
    echo "valid (tokenizing), seconds: $(secs "$s1" "$s2")"
    cat "$TMP/train.summary" "$TMP/valid.summary"
    (cd "$TMP" && sha256sum tokenizer.model train.bin train.idx valid.bin valid.idx)
  } >"$TMP/manifest.txt"
  rm -f "$TMP/train.summary" "$TMP/valid.summary"
  touch "$TMP/.complete"
  rm -rf "$DATA"
  mv "$TMP" "$DATA"
fi

# The stable name the shipped configs read (${ORTHOTRON_DATA}, default <cache>/data): a link to this
# dataset, replaced atomically so a concurrent reader sees the old or the new one.
ln -sfn "$(basename "$DATA")" "$CACHE/data.link.tmp" && mv -T "$CACHE/data.link.tmp" "$CACHE/data"
log "linked:    $CACHE/data -> $(basename "$DATA")"
log "corpus:    $CORPUS/{train,valid}.jsonl (built or checked in $(secs "$t0" "$t1") s)"
log "tokenizer: $DATA/tokenizer.model"
log "datasets:  $DATA/train (.bin/.idx), $DATA/valid (.bin/.idx)"
echo "$DATA"
