#!/usr/bin/env python3
"""Build the embedded default corpus from the Rust documentation that ships with the toolchain.

Run once by a maintainer; the result (assets/corpus/corpus.jsonl.gz) is committed, so the build
never depends on these paths. Sources (MIT OR Apache-2.0): The Rust Programming Language,
The Rust Reference, Rust by Example, from `rustc --print sysroot`/share/doc/rust/html.
One JSON object per line: {"source": ..., "text": ...}; documents in sorted path order.
"""
import gzip
import html.parser
import json
import pathlib
import subprocess
import sys

BOOKS = ["book", "reference", "rust-by-example"]
SKIP = {"print.html", "toc.html", "404.html", "index.html", "SUMMARY.html"}
MIN_CHARS = 1500  # redirect stubs and near-empty pages are skipped


class MainText(html.parser.HTMLParser):
    """Collects the text inside <main>, without scripts, styles and buttons."""

    BLOCK = {"p", "pre", "li", "h1", "h2", "h3", "h4", "h5", "tr", "div", "br", "table", "blockquote"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.in_main = 0
        self.skip = 0
        self.out = []

    def handle_starttag(self, tag, attrs):
        if tag == "main":
            self.in_main += 1
        elif tag in ("script", "style", "button", "nav"):
            self.skip += 1
        elif tag in self.BLOCK and self.in_main:
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag == "main":
            self.in_main -= 1
        elif tag in ("script", "style", "button", "nav"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK and self.in_main:
            self.out.append("\n")

    def handle_data(self, data):
        if self.in_main and not self.skip:
            self.out.append(data)

    def text(self):
        lines = [line.rstrip() for line in "".join(self.out).splitlines()]
        text, blank = [], 0
        for line in lines:
            blank = blank + 1 if not line.strip() else 0
            if blank <= 1:
                text.append(line)
        return "\n".join(text).strip()


def main():
    root = pathlib.Path(subprocess.check_output(["rustc", "--print", "sysroot"], text=True).strip())
    html_root = root / "share/doc/rust/html"
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "assets/corpus/corpus.jsonl.gz")
    docs = 0
    chars = 0
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as f:
        for book in BOOKS:
            for path in sorted((html_root / book).rglob("*.html")):
                rel = path.relative_to(html_root)
                if path.name in SKIP or "2018-edition" in rel.parts or "first-edition" in rel.parts:
                    continue
                parser = MainText()
                parser.feed(path.read_text(encoding="utf-8", errors="replace"))
                text = parser.text()
                if len(text) < MIN_CHARS:
                    continue
                f.write(json.dumps({"source": str(rel), "text": text}, ensure_ascii=False) + "\n")
                docs += 1
                chars += len(text)
    print(f"{docs} documents, {chars} characters -> {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
