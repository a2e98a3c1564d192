#!/usr/bin/env bash
# The embedded default corpus: real English prose and source code from Debian packages, so a new
# user trains on real text with no downloads beyond apt. Idempotent: each step is skipped when its
# output exists (delete data/corpus/ to start over). About 2-4 minutes on 2 cores.
#
#   data/gather_corpus.sh [path/to/openmoe]      (default: build/launch/openmoe, built if missing)
#
# Steps, all into data/corpus/ (gitignored):
#   1. apt-get install the packages below if missing (documentation sources and -src packages).
#   2. data/collect_corpus.py: >= 20 MB each of prose -> text.jsonl.zst ({"text": ...}, like
#      RedPajama) and of code -> code.jsonl.zst ({"content": ..., "lang": ...}, like The Stack).
#   3. openmoe prep --train_tokenizer: a sentencepiece unigram model of 8000 pieces on both,
#      tokenizer.model; with 100 extra ids (sentinels) on top the vocabulary is 8100 ids, which
#      launch/configs/tiny_corpus.pbtxt sets as model.vocab_size (padded to 8192).
#   4. openmoe prep: token shards text_shards/ and code_shards/ for training.
#   5. held-out evaluation text, disjoint from the training files (by path and content):
#      heldout_text.jsonl ({"text"}), heldout_code.jsonl ({"content", "lang"}) and heldout.jsonl
#      (both kinds as {"text"}), ~200 KB each; spm.model is a link to tokenizer.model. Rows for
#      `openmoe score`: openmoe prep --input data/corpus/heldout.jsonl --tokenizer
#      data/corpus/spm.model --npy OUT.npy --rows 64 --seq_len 64
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/data/corpus"
binary="${1:-$root/build/launch/openmoe}"
vocab_size=8000
extra_ids=100

packages=(python3 zstd python3-doc perl-doc git-doc postgresql-doc golang-src)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gather_corpus: installing ${missing[*]}"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$out"
if [ ! -s "$out/text.jsonl.zst" ] || [ ! -s "$out/code.jsonl.zst" ]; then
  python3 "$root/data/collect_corpus.py" --out "$out"
else
  echo "gather_corpus: $out/{text,code}.jsonl.zst exist, skipping collection"
fi

if [ ! -x "$binary" ]; then
  "$root/launch/build.sh" openmoe
fi

if [ ! -s "$out/tokenizer.model" ]; then
  "$binary" prep --input "$out/text.jsonl.zst" --input "$out/code.jsonl.zst" \
    --text_field text --text_field content \
    --train_tokenizer "$out/tokenizer.model" --vocab_size "$vocab_size" --extra_ids "$extra_ids" \
    --max_sentences 200000 --threads 2
else
  echo "gather_corpus: $out/tokenizer.model exists, skipping tokenizer training"
fi

for kind in text code; do
  field=text
  if [ "$kind" = code ]; then field=content; fi
  # Shards of an older index format (written before XXH64 checksums) are made again.
  if [ -s "$out/${kind}_shards/index.txt" ] &&
     [ "$(head -1 "$out/${kind}_shards/index.txt")" != "openmoe-token-shards 2" ]; then
    echo "gather_corpus: $out/${kind}_shards has an older format, preparing it again"
    rm -rf "$out/${kind}_shards"
  fi
  if [ ! -s "$out/${kind}_shards/index.txt" ]; then
    "$binary" prep --input "$out/$kind.jsonl.zst" --text_field "$field" \
      --tokenizer "$out/tokenizer.model" --extra_ids "$extra_ids" --out "$out/${kind}_shards" --threads 2
  else
    echo "gather_corpus: $out/${kind}_shards exists, skipping"
  fi
done
if [ ! -s "$out/heldout.jsonl" ] || [ ! -s "$out/heldout_text.jsonl" ] || [ ! -s "$out/heldout_code.jsonl" ]; then
  python3 "$root/data/collect_corpus.py" --out "$out" --heldout_kb 200
else
  echo "gather_corpus: $out/heldout*.jsonl exist, skipping"
fi
ln -sf tokenizer.model "$out/spm.model"
echo "gather_corpus: done; train with:"
echo "  build/launch/openmoe train --job launch/configs/tiny.pbtxt --job launch/configs/tiny_corpus.pbtxt"
