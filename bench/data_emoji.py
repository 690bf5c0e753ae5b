"""Build "emoji by vendor": the same emoji drawn by Apple, Google, Twitter and Facebook, labelled by keywords.

Usage (from the repo root):
    .venv/bin/python bench/data_emoji.py --out data/emoji [--packages data/npm] [--classes 18] [--seed 0] [--force]
    .venv/bin/python bench/data_emoji.py --labels category --out data/emoji_category   # single-label

Source: the npm packages emoji-datasource-{apple,google,twitter,facebook}@16.0.0 (iamcal/emoji-data;
`img/<vendor>/64/<unified>.png` and `emoji.json`, MIT for the data) and emojilib@4.0.3 (MIT; its
`dist/emoji-en-US.json` maps an emoji to keywords). Licences of the images, as emoji-datasource's README
states them: Apple's are © Apple Inc. and not licensed for commercial use; Google's (Noto Emoji) are
Apache 2.0; Twitter's (Twemoji, jdecked fork) are CC-BY 4.0; Facebook's are © Facebook, Inc. with no
clear licensing. Missing packages are installed with `npm install --prefix <packages>`.

Images: one per (emoji, vendor) where emoji.json says the vendor has one (has_img_<vendor>), skin-tone
variations left out; the 64×64 RGBA PNG composited onto white, saved as <out>/Images/<vendor>_<unified>.png.
Labels: emojilib keywords. Classes are the --classes most frequent keywords over the emoji, skipping a
keyword that is an emoji's own name (emojilib's first keyword or an emoji.json short name, e.g. "woman"),
one that covers more than 40% of the emoji, and one that labels nearly the same emoji as a more frequent
class (Jaccard >= 0.8: "banner", "country", "nation" repeat "flag"). Emoji with no class are dropped.
With `--labels category` the set is single-label instead: an emoji's class is its emoji.json
`category` ("Smileys & Emotion", "Animals & Nature", ... ; "Component", the bare skin tones and hair
styles, left out), one 0/1 column per category with exactly one 1 per row; every emoji is kept.
Groups: the emoji (its unified code), so all vendors' drawings of one emoji sit in one split; ~70/15/15
train/valid/test, greedy-stratified over groups with --seed (see bench/_suite.py).
"""

from __future__ import annotations

import json
import time
from collections import Counter

import _suite
import numpy as np
from PIL import Image

VERSION = "16.0.0"
VENDORS = ("apple", "google", "twitter", "facebook")
EMOJILIB = "4.0.3"
MAX_SHARE = 0.40
MAX_JACCARD = 0.8


def char(unified: str) -> str:
    """The emoji's characters from its unified code, e.g. '1F600' -> '😀'."""
    return "".join(chr(int(h, 16)) for h in unified.split("-"))


def choose_classes(keywords: dict[str, set[str]], names: set[str], k: int) -> list[str]:
    """The k most frequent keywords, skipping names, too common ones and near-duplicates of a chosen one."""
    emoji_of: dict[str, set[str]] = {}
    for emoji, words in keywords.items():
        for w in words:
            emoji_of.setdefault(w, set()).add(emoji)
    counts = Counter({w: len(e) for w, e in emoji_of.items()})
    classes: list[str] = []
    for word, n in sorted(counts.items(), key=lambda wn: (-wn[1], wn[0])):
        if len(classes) == k:
            break
        if word in names or n > MAX_SHARE * len(keywords):
            continue
        if all(
            len(emoji_of[word] & emoji_of[c]) / len(emoji_of[word] | emoji_of[c]) < MAX_JACCARD
            for c in classes
        ):
            classes.append(word)
    return classes


def main() -> int:
    parser = _suite.parser(__doc__, "data/emoji")
    parser.add_argument(
        "--labels",
        choices=("keywords", "category"),
        default="keywords",
        help="keywords: multi-label (default); category: one emoji.json category per emoji (single-label)",
    )
    args = parser.parse_args()
    start = time.time()
    packages = {f"emoji-datasource-{v}": VERSION for v in VENDORS} | {"emojilib": EMOJILIB}
    modules = _suite.npm_packages(args.packages, packages)
    emoji = json.loads((modules / "emoji-datasource-apple" / "emoji.json").read_text())
    lib = json.loads((modules / "emojilib" / "dist" / "emoji-en-US.json").read_text())

    keywords: dict[str, set[str]] = {}  # unified -> keywords, the emoji's own name left out
    names: set[str] = set()
    for e in emoji:
        words = lib.get(char(e["unified"])) or lib.get(char(e["non_qualified"] or e["unified"]))
        if words:
            keywords[e["unified"]] = set(words[1:])
            names.update([words[0], *e["short_names"]])
    if args.labels == "category":
        classes = sorted({e["category"] for e in emoji} - {"Component"})
        keywords = {e["unified"]: {e["category"]} for e in emoji}
    else:
        classes = choose_classes(keywords, names, args.classes)
    print(f"classes: {', '.join(classes)}")

    out = _suite.prepare_out(args.out, args.force)
    ids, groups, rows = [], [], []
    for e in emoji:  # skin_variations are nested in their base emoji and not visited
        unified = e["unified"]
        labels = [c in keywords.get(unified, ()) for c in classes]
        if not any(labels):
            continue
        for vendor in VENDORS:
            source = modules / f"emoji-datasource-{vendor}" / "img" / vendor / "64" / e["image"]
            if not e[f"has_img_{vendor}"] or not source.is_file():
                continue
            image_id = f"{vendor}_{unified.lower()}"
            with Image.open(source) as image:
                _suite.save_on_white(image, out / "Images" / f"{image_id}.png")
            ids.append(image_id)
            groups.append(unified)
            rows.append(labels)
    _suite.write_splits(out, ids, groups, np.array(rows, dtype=np.int8), classes, args.seed)
    print(f"built {out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
