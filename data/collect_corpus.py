#!/usr/bin/env python3
"""Collects the embedded default corpus from installed Debian packages (see gather_corpus.sh).

Writes, deterministically (sorted file lists, a seeded shuffle of documents):
  OUT/text.jsonl.zst  RedPajama-like: {"text": ..., "meta": {"source": ..., "path": ...}}
  OUT/code.jsonl.zst  Stack-like: {"content": ..., "lang": ..., "path": ..., "size": ...}
Prose: Python's reStructuredText documentation sources, Perl's POD manuals, Git's AsciiDoc
documentation, PostgreSQL's HTML manual (tags stripped). Code: Go's standard library, Python's
standard library, C headers under /usr/include, Perl modules. Each kind is capped (--text_mb,
--code_mb, split over its parts) so the corpus stays small; one file is one document.
"""
import argparse
import glob
import html.parser
import itertools
import json
import os
import random
import re
import subprocess
import sys


class HtmlText(html.parser.HTMLParser):
    """Visible text of an HTML page, with block elements as line breaks."""

    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt",
             "dd", "table", "ul", "ol", "section", "title", "blockquote"}
    SKIP = {"script", "style", "head"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)

    def text(self):
        lines = [re.sub(r"[ \t\r\f\v]+", " ", l).strip() for l in "".join(self.parts).split("\n")]
        out, blank = [], False
        for l in lines:
            if l:
                out.append(l)
                blank = False
            elif not blank and out:
                out.append("")
                blank = True
        return "\n".join(out).strip() + "\n"


def files(patterns, exclude=()):
    seen, out = set(), []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern, recursive=True)):
            real = os.path.realpath(path)
            if real in seen or not os.path.isfile(real) or any(x in path for x in exclude):
                continue
            seen.add(real)
            out.append(path)
    return out


def read_text(path, max_bytes):
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError:
        return None
    if len(data) > max_bytes or b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def gather(parts, budget, max_file, convert=None):
    """parts: (name, lang, paths). Takes files in order until each part has its share of what the
    earlier parts left of the budget (put small parts first: what they lack goes to later ones)."""
    docs = []
    left = budget
    for k, (name, lang, paths) in enumerate(parts):
        share = left // (len(parts) - k)
        used = 0
        for path in paths:
            text = read_text(path, max_file)
            if text is None:
                continue
            if convert and path.endswith(".html"):
                p = HtmlText()
                p.feed(text)
                text = p.text()
            if len(text.strip()) < 64:
                continue
            docs.append((name, lang, path, text))
            used += len(text.encode("utf-8"))
            if used >= share:
                break
        left -= used
        print(f"  {name}: {used / 1e6:.1f} MB from {len(paths)} candidate files", file=sys.stderr)
    return docs


def write_zst(path, records):
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw:
        proc = subprocess.Popen(["zstd", "-q", "-6", "-T2", "-c"], stdin=subprocess.PIPE, stdout=raw)
        for r in records:
            proc.stdin.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
        proc.stdin.close()
        if proc.wait() != 0:
            raise SystemExit(f"zstd failed writing {path}")
    os.replace(tmp, path)


def training_docs(path):
    """(paths, content hashes) of the records of a training .jsonl.zst."""
    paths, hashes = set(), set()
    proc = subprocess.Popen(["zstd", "-q", "-dc", path], stdout=subprocess.PIPE)
    for line in proc.stdout:
        r = json.loads(line)
        text = r.get("text", r.get("content", ""))
        paths.add(r.get("path") or r.get("meta", {}).get("path"))
        hashes.add(hash(text))
    if proc.wait() != 0:
        raise SystemExit(f"zstd failed reading {path}")
    return paths, hashes


def heldout(out, parts, train_file, kb, max_file, convert=None):
    """Documents of `parts` that are not in `train_file` (by path and by content), about `kb` KB
    taken evenly from the parts: evaluation text the model never trained on."""
    paths, hashes = training_docs(train_file)
    docs, per_part = [], kb * 1000 // len(parts)
    for name, lang, candidates in parts:
        used = 0
        for path in reversed(candidates):  # the training pass takes files from the front
            if path in paths or used >= per_part:
                continue
            text = read_text(path, min(max_file, 64 * 1024))
            if text is None:
                continue
            if convert and path.endswith(".html"):
                p = HtmlText()
                p.feed(text)
                text = p.text()
            if len(text.strip()) < 256 or hash(text) in hashes:
                continue
            docs.append((name, lang, path, text))
            used += len(text.encode("utf-8"))
    return docs


def write_jsonl(path, records):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--heldout_kb", type=int, default=0,
                    help="instead of the training files: write held-out heldout_text.jsonl, "
                         "heldout_code.jsonl and heldout.jsonl (both, as {\"text\"}) of about "
                         "this many KB each, disjoint from the training files in OUT")
    ap.add_argument("--text_mb", type=float, default=28)
    ap.add_argument("--code_mb", type=float, default=28)
    ap.add_argument("--max_file_kb", type=int, default=512)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    max_file = a.max_file_kb * 1024

    prose_parts = [
        ("git-doc", "asciidoc", files(["/usr/share/doc/git-doc/**/*.txt"])),
        ("perl-doc", "pod", files(["/usr/share/perl/5*/pod/*.pod"])),
        ("python-doc", "restructuredtext", files(["/usr/share/doc/python3*/html/_sources/**/*.txt"])),
        ("postgresql-doc", "html", files(["/usr/share/doc/postgresql-doc-*/html/*.html"])),
    ]
    code_parts = [
        ("go", "go", files(["/usr/share/go-*/src/**/*.go", "/usr/lib/go-*/src/**/*.go"],
                           exclude=("/testdata/",))),
        ("python", "python", files(["/usr/lib/python3.*/**/*.py"], exclude=("/site-packages/", "/dist-packages/"))),
        ("c", "c", files(["/usr/include/**/*.h"])),
        ("perl", "perl", files(["/usr/share/perl/5*/**/*.pm"])),
    ]
    if a.heldout_kb > 0:
        text = heldout(a.out, prose_parts, os.path.join(a.out, "text.jsonl.zst"), a.heldout_kb,
                       max_file, convert=True)
        code = heldout(a.out, code_parts, os.path.join(a.out, "code.jsonl.zst"), a.heldout_kb,
                       max_file)
        rng = random.Random(1)
        rng.shuffle(text)
        rng.shuffle(code)
        write_jsonl(os.path.join(a.out, "heldout_text.jsonl"),
                    ({"text": t, "meta": {"source": n, "path": p}} for n, _, p, t in text))
        write_jsonl(os.path.join(a.out, "heldout_code.jsonl"),
                    ({"content": t, "lang": l, "path": p} for _, l, p, t in code))
        # Both kinds interleaved, one field: what `openmoe prep --npy` reads by default.
        mixed = [d for pair in itertools.zip_longest(text, code) for d in pair if d is not None]
        write_jsonl(os.path.join(a.out, "heldout.jsonl"),
                    ({"text": t, "meta": {"source": n, "path": p}} for n, _, p, t in mixed))
        print(f"wrote held-out {len(text)} prose and {len(code)} code documents to {a.out}",
              file=sys.stderr)
        return
    print("collecting prose:", file=sys.stderr)
    prose = gather(prose_parts, int(a.text_mb * 1e6), max_file, convert=True)
    print("collecting code:", file=sys.stderr)
    code = gather(code_parts, int(a.code_mb * 1e6), max_file)

    rng = random.Random(0)
    rng.shuffle(prose)
    rng.shuffle(code)
    write_zst(os.path.join(a.out, "text.jsonl.zst"),
              ({"text": t, "meta": {"source": n, "path": p}} for n, _, p, t in prose))
    write_zst(os.path.join(a.out, "code.jsonl.zst"),
              ({"content": t, "lang": l, "path": p, "size": len(t.encode("utf-8"))} for _, l, p, t in code))
    mb = lambda docs: sum(len(d[3].encode("utf-8")) for d in docs) / 1e6
    print(f"wrote {len(prose)} prose documents ({mb(prose):.1f} MB) and {len(code)} code documents "
          f"({mb(code):.1f} MB) to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
