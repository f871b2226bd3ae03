#!/usr/bin/env python3
"""build_corpus.py: the bundled English corpus of the GPT engine, built reproducibly from the
reStructuredText sources that two Debian packages install:

  python3.11-doc  /usr/share/doc/python3.11/html/_sources/**/*.rst.txt   (the Python documentation)
  linux-doc-6.1   /usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz (the kernel documentation,
                  without translations/ and the machine-generated ABI/, devicetree/, netlink/specs)

Each file is cleaned (markup, code and literal blocks, tables, directives and section underlines
removed; paragraphs joined into one line each; the bodies of notes and descriptions kept) and cut at
its section headings into documents of at least MIN_DOC_CHARS characters. The train/validation split
is by source file (every section of a file goes the same way): a file is validation when the first
8 bytes of sha256("<package>/<path>") read as an integer are < VALID_FRACTION of 2^64 (about 2%).
Files are visited in sorted order and JSON is written with sorted keys, so two machines with the
same package versions get the same bytes.

Output in OUT (default ${ORTHOTRON_CACHE:-$HOME/.cache/orthotron}/corpus-<key>/, where <key> names
both package versions and this script's hash): train.jsonl and valid.jsonl (one {"id", "text"}
object per line), SHA256SUMS, manifest.json (versions, counts, bytes, seconds), .complete. Written
to OUT.tmp, then renamed, so OUT is complete or absent. A complete OUT is reused.

  python3 launch/build_corpus.py            # build (or reuse) and print OUT
  python3 launch/build_corpus.py --key      # print the cache key only
  python3 launch/build_corpus.py --out DIR  # build into DIR
"""
import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

PY_DOC_PKG = "python3.11-doc"
PY_DOC_ROOT = "/usr/share/doc/python3.11/html/_sources"
LINUX_DOC_PKG = "linux-doc-6.1"
LINUX_DOC_ROOT = "/usr/share/doc/linux-doc-6.1/Documentation"
LINUX_EXCLUDE = ("translations/", "ABI/", "devicetree/", "netlink/specs/", "sphinx/", "output/")
MIN_DOC_CHARS = 4000
VALID_FRACTION = 0.02

# Directives whose whole block (arguments, options and body) is not prose.
DROP_DIRECTIVES = {
    "code-block", "code", "sourcecode", "literalinclude", "toctree", "image", "figure", "kernel-doc",
    "kernel-abi", "kernel-feat", "kernel-include", "raw", "index", "highlight", "testcode", "testoutput",
    "testsetup", "testcleanup", "doctest", "productionlist", "flat-table", "csv-table", "list-table",
    "table", "graphviz", "math", "include", "only", "cssclass", "tabularcolumns", "moduleauthor",
    "sectionauthor", "opcode", "cmdoption", "option", "envvar", "c:macro", "c:type", "c:var", "c:member",
    "c:function", "c:struct", "c:union", "c:enum", "c:enumerator", "cpp:function", "availability",
    "impl-detail", "audit-event", "audit-event-table", "pdbcommand", "2to3fixer", "describe", "program",
    "currentmodule", "default-role", "contents", "sectnum", "rst-class", "parsed-literal", "role",
    "autosummary", "automodule", "autofunction", "SPDX-License-Identifier", "kfigure",
}
# Directives whose signature (argument) is a line of prose-ish text worth keeping, body kept too.
SIGNATURE_DIRECTIVES = {
    "function", "method", "class", "attribute", "data", "exception", "module", "decorator",
    "decoratormethod", "classmethod", "staticmethod", "abstractmethod", "coroutinefunction",
    "coroutinemethod", "property",
}

UNDERLINE = re.compile(r"^([=\-~^\"'`#*+<>_.:])\1{2,}\s*$")
DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([A-Za-z0-9_:+-]+)::\s*(.*)$")
COMMENT_OR_TARGET = re.compile(r"^(\s*)\.\.(\s|$)")
LIST_ITEM = re.compile(r"^(\s*)([-*+•]|#\.|\(?[0-9a-zA-Z]{1,3}[.)])\s+\S")
TABLE_LINE = re.compile(r"^\s*[+|].*[+|]\s*$")
ROLE = re.compile(r":[A-Za-z0-9_:+-]+:`([^`]*)`")
ANGLE_TARGET = re.compile(r"^(.*?)\s*<[^<>]*>$")
REF = re.compile(r"`([^`]+)`__?")
LITERAL = re.compile(r"``([^`]+)``")
EMPH = re.compile(r"(\*\*|\*)(\S[^*]*?\S|\S)\1")
SUBST = re.compile(r"\|([A-Za-z0-9_ -]+)\|")
FOOTNOTE = re.compile(r"\s*\[(#[A-Za-z0-9_-]*|[0-9]+|\*)\]_")


def package_version(pkg):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout:
        sys.exit(f"build_corpus: Debian package {pkg} is not installed (apt-get install {pkg})")
    return out.stdout


def cache_key():
    with open(__file__, "rb") as f:
        script = hashlib.sha256(f.read()).hexdigest()[:8]
    versions = f"pydoc{package_version(PY_DOC_PKG)}-linuxdoc{package_version(LINUX_DOC_PKG)}"
    return re.sub(r"[^A-Za-z0-9.]+", "_", versions) + "-" + script


def inline(text):
    """Strips inline markup from one line of prose."""
    def role(m):
        inner = m.group(1).lstrip("~!")
        t = ANGLE_TARGET.match(inner)
        return t.group(1) if t and t.group(1) else inner
    text = ROLE.sub(role, text)
    text = LITERAL.sub(r"\1", text)

    def ref(m):
        t = ANGLE_TARGET.match(m.group(1))
        return t.group(1) if t and t.group(1) else m.group(1)
    text = REF.sub(ref, text)
    text = EMPH.sub(r"\2", text)
    text = SUBST.sub(r"\1", text)
    text = FOOTNOTE.sub("", text)
    return text.replace("\\ ", "").replace("\\", "")


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def clean_rst(raw):
    """Returns a list of sections; each is a list of paragraphs (one line of prose each)."""
    lines = raw.expandtabs(8).replace("\r\n", "\n").split("\n")
    sections = [[]]
    para = []

    def end_para():
        if para:
            text = inline(" ".join(p.strip() for p in para)).strip()
            if len(text) > 1 and re.search(r"[A-Za-z]{2}", text):
                sections[-1].append(text)
            para.clear()

    i, n = 0, len(lines)
    while i < n:
        line = lines[i].rstrip()
        stripped = line.strip()
        nxt = lines[i + 1].rstrip() if i + 1 < n else ""
        if not stripped:
            end_para()
            i += 1
            continue
        # Section title: text line followed by an underline (an overline before it was dropped).
        if UNDERLINE.match(nxt.strip()) and len(nxt.strip()) >= len(stripped) - 2 and not UNDERLINE.match(stripped):
            end_para()
            if sections[-1]:
                sections.append([])
            sections[-1].append(inline(stripped))
            i += 2
            continue
        if UNDERLINE.match(stripped) or TABLE_LINE.match(line):
            end_para()
            i += 1
            continue
        d = DIRECTIVE.match(line)
        if d or COMMENT_OR_TARGET.match(line):
            end_para()
            base = indent_of(line)
            name = d.group(2) if d else ""
            keep_body = bool(d) and name not in DROP_DIRECTIVES
            if d and name in SIGNATURE_DIRECTIVES and d.group(3):
                sections[-1].append(inline(d.group(3)))
            i += 1
            # The block: every following line that is blank or indented deeper than the directive.
            block = []
            while i < n and (not lines[i].strip() or indent_of(lines[i]) > base):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            if keep_body:
                body = [b for b in block if not re.match(r"^\s*:[A-Za-z-]+:", b)]  # directive options
                body_indent = min((indent_of(b) for b in body if b.strip()), default=0)
                sub = clean_rst("\n".join(b[body_indent:] for b in body))
                for s in sub:
                    sections[-1].extend(s)
            continue
        if stripped.startswith(">>>"):
            end_para()
            while i < n and lines[i].strip():
                i += 1
            continue
        # A literal block follows a line ending with "::": drop the indented block after it.
        if stripped.endswith("::"):
            base = indent_of(line)
            keep = stripped[:-2].rstrip()
            if keep:
                para.append(line[: len(line) - 2].rstrip() + (":" if not keep.endswith(":") else ""))
            end_para()
            i += 1
            while i < n and (not lines[i].strip() or indent_of(lines[i]) > base):
                i += 1
            continue
        if LIST_ITEM.match(line):
            end_para()
        para.append(line)
        i += 1
    end_para()
    return [s for s in sections if s]


def documents_of(name, raw):
    """Cuts a cleaned file into documents of >= MIN_DOC_CHARS characters (the last may be shorter)."""
    docs, current = [], []
    size = 0
    for section in clean_rst(raw):
        current.extend(section)
        size += sum(len(p) + 2 for p in section)
        if size >= MIN_DOC_CHARS:
            docs.append("\n\n".join(current))
            current, size = [], 0
    if current:
        tail = "\n\n".join(current)
        if docs and len(tail) < MIN_DOC_CHARS // 4:
            docs[-1] += "\n\n" + tail
        else:
            docs.append(tail)
    return [(f"{name}#{k}", d) for k, d in enumerate(docs) if len(d) >= 200]


def source_files():
    """(name, path, gzipped) for every input file, in sorted order."""
    files = []
    for root, _, names in os.walk(PY_DOC_ROOT):
        for f in names:
            if f.endswith(".rst.txt"):
                rel = os.path.relpath(os.path.join(root, f), PY_DOC_ROOT)
                files.append((f"{PY_DOC_PKG}/{rel[:-4]}", os.path.join(root, f), False))
    for root, _, names in os.walk(LINUX_DOC_ROOT):
        for f in names:
            if f.endswith(".rst.gz"):
                rel = os.path.relpath(os.path.join(root, f), LINUX_DOC_ROOT)
                if not rel.startswith(LINUX_EXCLUDE):
                    files.append((f"{LINUX_DOC_PKG}/{rel[:-3]}", os.path.join(root, f), True))
    if not files:
        sys.exit(f"build_corpus: no sources under {PY_DOC_ROOT} or {LINUX_DOC_ROOT}")
    return sorted(files)


def is_validation(name):
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return h < VALID_FRACTION * 2**64


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(out):
    start = time.time()
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    counts = {"train": [0, 0, 0], "valid": [0, 0, 0]}  # files, documents, bytes of text
    raw_bytes = 0
    with open(os.path.join(tmp, "train.jsonl"), "w", encoding="utf-8", newline="\n") as train, \
            open(os.path.join(tmp, "valid.jsonl"), "w", encoding="utf-8", newline="\n") as valid:
        for name, path, gz in source_files():
            with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
                data = f.read()
            raw_bytes += len(data)
            split = "valid" if is_validation(name) else "train"
            docs = documents_of(name, data.decode("utf-8", errors="replace"))
            if not docs:
                continue
            counts[split][0] += 1
            for doc_id, text in docs:
                line = json.dumps({"id": doc_id, "text": text}, ensure_ascii=False, sort_keys=True)
                (valid if split == "valid" else train).write(line + "\n")
                counts[split][1] += 1
                counts[split][2] += len(text.encode("utf-8"))
    sums = {f: sha256_file(os.path.join(tmp, f)) for f in ("train.jsonl", "valid.jsonl")}
    with open(os.path.join(tmp, "SHA256SUMS"), "w") as f:
        for name in sorted(sums):
            f.write(f"{sums[name]}  {name}\n")
    manifest = {
        "packages": {PY_DOC_PKG: package_version(PY_DOC_PKG), LINUX_DOC_PKG: package_version(LINUX_DOC_PKG)},
        "source_bytes": raw_bytes,
        "min_doc_chars": MIN_DOC_CHARS,
        "valid_fraction": VALID_FRACTION,
        "seconds": round(time.time() - start, 1),
        "sha256": sums,
    }
    for split, (files, docs, nbytes) in counts.items():
        manifest[split] = {"files": files, "documents": docs, "text_bytes": nbytes,
                           "jsonl_bytes": os.path.getsize(os.path.join(tmp, f"{split}.jsonl"))}
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    open(os.path.join(tmp, ".complete"), "w").close()
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return manifest


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output directory (default: <cache>/corpus-<key>)")
    ap.add_argument("--key", action="store_true", help="print the cache key and exit")
    ap.add_argument("--force", action="store_true", help="rebuild even if a complete corpus exists")
    args = ap.parse_args()
    key = cache_key()
    if args.key:
        print(key)
        return
    cache = os.environ.get("ORTHOTRON_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "orthotron"))
    out = os.path.abspath(args.out or os.path.join(cache, f"corpus-{key}"))
    if os.path.exists(os.path.join(out, ".complete")) and not args.force:
        print(f"[corpus] reusing {out}", file=sys.stderr)
    else:
        print(f"[corpus] building {out} from {PY_DOC_PKG} and {LINUX_DOC_PKG} ...", file=sys.stderr)
        m = build(out)
        for split in ("train", "valid"):
            s = m[split]
            print(f"[corpus] {split}: {s['documents']} documents from {s['files']} files, "
                  f"{s['text_bytes'] / 1e6:.1f} MB of text", file=sys.stderr)
        print(f"[corpus] built in {m['seconds']} s", file=sys.stderr)
    with open(os.path.join(out, "SHA256SUMS")) as f:
        for line in f:
            print(f"[corpus] sha256 {line.strip()}", file=sys.stderr)
    print(out)


if __name__ == "__main__":
    main()
