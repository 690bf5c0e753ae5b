"""Build "Material Design Icons": black-on-white icons labelled by their categories (multi-label).

Usage (from the repo root; needs cairosvg: `.venv/bin/pip install -e ".[bench]"`, and libcairo2):
    .venv/bin/python bench/data_icons.py --out data/icons [--packages data/npm] [--classes 18] [--seed 0] [--force]

Source: the npm package @mdi/svg@7.4.47 (Pictogrammers' Material Design Icons; `svg/<name>.svg` and
`meta.json`). Licence: package.json says Apache-2.0; its LICENSE ("Pictogrammers Free License") puts the
icons under Apache 2.0, some redistributed under their own licences. A missing package is installed with
`npm install --prefix <packages>`.

Images: every icon that is not deprecated and has a class, rasterized with cairosvg to 64×64 and
composited onto white: <out>/Images/<name>.png. Labels: meta.json `tags` (categories such as
"Transportation + Road"); classes are the --classes most frequent tags over those icons. Groups: the
icon family, the name before its first '-' (car, car-outline and car-off are one), so a family sits in
one split; ~70/15/15 train/valid/test, greedy-stratified over groups with --seed (see bench/_suite.py).
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter

import _suite
import numpy as np
from PIL import Image

VERSION = "7.4.47"


def main() -> int:
    args = _suite.parser(__doc__, "data/icons").parse_args()
    try:
        import cairosvg
    except ImportError:
        raise SystemExit("bench/data_icons.py rasterizes SVGs with cairosvg: pip install cairosvg") from None
    start = time.time()
    modules = _suite.npm_packages(args.packages, {"@mdi/svg": VERSION})
    icons = [i for i in json.loads((modules / "@mdi/svg/meta.json").read_text()) if not i["deprecated"]]
    counts = Counter(tag for icon in icons for tag in set(icon["tags"]))
    classes = [tag for tag, _ in sorted(counts.items(), key=lambda tn: (-tn[1], tn[0]))[: args.classes]]
    print(f"classes: {', '.join(classes)}")

    out = _suite.prepare_out(args.out, args.force)
    ids, groups, rows = [], [], []
    for icon in sorted(icons, key=lambda i: i["name"]):
        labels = [c in icon["tags"] for c in classes]
        if not any(labels):
            continue
        svg = (modules / "@mdi/svg/svg" / f"{icon['name']}.svg").read_bytes()
        png = cairosvg.svg2png(bytestring=svg, output_width=64, output_height=64)
        _suite.save_on_white(Image.open(io.BytesIO(png)), out / "Images" / f"{icon['name']}.png")
        ids.append(icon["name"])
        groups.append(icon["name"].split("-")[0])
        rows.append(labels)
    _suite.write_splits(out, ids, groups, np.array(rows, dtype=np.int8), classes, args.seed)
    print(f"built {out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
