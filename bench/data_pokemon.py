"""Build "Pokémon by type": the box sprites of every Pokémon form, labelled by its one or two types (multi-label).

Usage (from the repo root; needs node, as the other builders need npm):
    .venv/bin/python bench/data_pokemon.py --out data/pokemon [--packages data/npm] [--classes 18] [--seed 0] [--force]

Source: the npm packages pokesprite-images@2.7.0 (msikma/pokesprite: the box sprites of the core series
games, `pokemon-gen8/{regular,shiny}/<slug>.png` and `pokemon-gen7x/{regular,shiny}/<slug>.png`, 68×56
pixel art; the sprites are © Nintendo / Creatures / Game Freak, the project's code MIT) and
@pkmn/dex@0.10.11 (MIT; Pokémon Showdown's data: each species' and form's types and the species it
evolves from), read with node. A missing package is installed with `npm install --prefix <packages>`.

A different kind of image from the emoji and icons: pixel art of creatures, and the labels are game
types (Fire, Water, Flying, ...), which a sprite shows only through colour and shape. Images: every
sprite whose slug names a form in @pkmn/dex, the regular and the shiny colouring from both sprite sets
(the gen 7 and gen 8 drawings often differ), cropped to its drawn pixels, padded to a square, composited onto white and resized to
64×64: <out>/Images/<set>_<colouring>_<slug>.png. Labels: the form's types; classes are the --classes
most frequent types. Groups: the evolution family (a species, its forms and every species that evolves
from or into it), so Charmander, Charizard and Mega Charizard X, in all their sprites, sit in one split;
~70/15/15 train/valid/test, greedy-stratified over groups with --seed (see bench/_suite.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import _suite
import numpy as np
from PIL import Image

PACKAGES = {"pokesprite-images": "2.7.0", "@pkmn/dex": "0.10.11"}
SPRITES = [(s, c) for s in ("gen8", "gen7x") for c in ("regular", "shiny")]
DUMP = """
const {Dex} = require('@pkmn/dex');
console.log(JSON.stringify(Dex.species.all().map(s => (
  {name: s.name, types: s.types, base: s.baseSpecies, prevo: s.prevo}))));
"""


def slug(name: str) -> str:
    """pokesprite's file name of a Showdown species name: 'Charizard-Mega-X' -> 'charizard-mega-x'."""
    name = name.lower().replace("♀", "-f").replace("♂", "-m").replace("é", "e").replace(" ", "-")
    return "".join(ch for ch in name if ch.isalnum() or ch == "-")


def families(species: list[dict]) -> dict[str, str]:
    """Species name -> its family's root: follow the base species and `prevo` links to the first stage."""
    by_name = {s["name"]: s for s in species}

    def root(name: str) -> str:
        seen = set()
        while name in by_name and name not in seen:
            seen.add(name)
            s = by_name[name]
            up = s["prevo"] or (s["base"] if s["base"] != name else "")
            if not up:
                break
            name = up
        return name

    return {s["name"]: root(s["name"]) for s in species}


def square(image: Image.Image) -> Image.Image:
    """The sprite cropped to its drawn pixels and centred on a transparent square, so the resize keeps
    its proportions (a box sprite leaves most of its 68×56 empty)."""
    rgba = image.convert("RGBA")
    rgba = rgba.crop(rgba.getchannel("A").getbbox() or (0, 0, *rgba.size))
    side = max(rgba.size)
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    canvas.paste(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return canvas


def main() -> int:
    args = _suite.parser(__doc__, "data/pokemon").parse_args()
    start = time.time()
    modules = _suite.npm_packages(args.packages, PACKAGES)
    dump = subprocess.run(
        ["node", "-e", DUMP], cwd=modules.parent, check=True, capture_output=True, text=True
    )
    species = json.loads(dump.stdout)
    by_slug = {slug(s["name"]): s for s in species}
    root = families(species)
    counts = Counter(t for s in species for t in s["types"])
    classes = [t for t, _ in sorted(counts.items(), key=lambda tn: (-tn[1], tn[0]))[: args.classes]]
    print(f"classes: {', '.join(classes)}")

    out = _suite.prepare_out(args.out, args.force)
    ids, groups, rows, unmatched = [], [], [], set()
    for sprite_set, colouring in SPRITES:
        folder = modules / "pokesprite-images" / f"pokemon-{sprite_set}" / colouring
        for path in sorted(Path(folder).glob("*.png")):
            form = by_slug.get(path.stem)
            labels = [c in form["types"] for c in classes] if form else []
            if not any(labels):
                unmatched.add(path.stem)
                continue
            name = f"{sprite_set}_{colouring}_{path.stem}"
            _suite.save_on_white(square(Image.open(path)), out / "Images" / f"{name}.png")
            ids.append(name)
            groups.append(root[form["name"]])
            rows.append(labels)
    print(
        f"{len(unmatched)} sprite names match no form with a class (left out), e.g. {sorted(unmatched)[:5]}"
    )
    _suite.write_splits(out, ids, groups, np.array(rows, dtype=np.int8), classes, args.seed)
    print(f"built {out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
