"""The embedded datasets ``synth-birds`` and ``synth-flowers``: procedurally drawn stand-ins for
CUB-200-2011 and Oxford-102 whose every pixel has a known part and colour.

A *species* is a fixed combination of named attributes (crown, wing, belly, ... colours for birds;
petal colour, shape and count, stamen colour, centre size for flowers). Species are drawn once per
dataset seed and split by class (150/50 and 82/20, as the real benchmarks): every colour a part can
take occurs in training, but each test species is a colour combination never seen in training, so
a model must compose what it learned from the words.

An image is made in two steps so that it can be redrawn with edited attributes:

* ``draw_scene`` turns a seed into a JSON-serialisable *scene*: the species' attributes, the pose,
  the background seed and the per-image colour jitter;
* ``render(scene, resolution)`` is a pure function of the scene: image and per-part label mask.
  Editing a colour (``edit_scene``) and rendering again changes only that part's pixels, which is
  the ground truth for counterfactual evaluation.

Objects are placed so that the paper's centre hole (the middle half of each side) hides the parts
whose colour only the caption can tell: the bird's wing and belly, the flower's stamen and most of
its petals. Captions are generated from templates in the style of Reed et al.'s, each naming a
different subset of the attributes; every colour word is the palette name of the part it precedes
(``a red crown``) or, after ``is``/``are``, of the part named before it (``the wings are blue``).

The package, one module per concept (imports run top to bottom):

    palette.py       the palette names and RGB values, ``nearest_colour``, colour jitter
    canvas.py        geometry in image fractions and the label/shade canvas parts are painted on
    backgrounds.py   out-of-focus backgrounds (sky, foliage, autumn; leaves, grass, soil)
    captions.py      the caption grammar both datasets share (sizes, subsets, ``a``/``an``)
    spec.py          ``SyntheticSpec``: what a dataset is; ``GENERATOR_VERSION``
    birds.py         ``synth-birds``: parts, attributes, pose, drawing, branch, caption templates
    flowers.py       ``synth-flowers``: parts, attributes, pose, drawing, caption templates
    datasets.py      the datasets by name and their lookups (parts, colour attributes, values, words)
    species.py       drawing each dataset's train and test species
    scene.py         scenes: drawn from an image seed, edited, captioned
    render.py        a scene to image, part mask and part coverage
    prepare.py       ``prepare_synthetic``: a whole dataset into the prepared format
"""

from __future__ import annotations

from csfgan.data.synthetic.birds import BIRD_PARTS, NO_WING_BARS
from csfgan.data.synthetic.captions import CAPTIONS_PER_IMAGE, MAX_CAPTION_WORDS
from csfgan.data.synthetic.datasets import DATASETS, attribute_values, colour_attributes, part_words, parts
from csfgan.data.synthetic.flowers import FLOWER_PARTS
from csfgan.data.synthetic.palette import COLOUR_JITTER, COLOUR_NAMES, colour_palette, nearest_colour
from csfgan.data.synthetic.prepare import prepare_synthetic
from csfgan.data.synthetic.render import part_coverage, render, supersampling
from csfgan.data.synthetic.scene import draw_scene, edit_scene, image_seed, scene_captions
from csfgan.data.synthetic.spec import GENERATOR_VERSION, SyntheticSpec
from csfgan.data.synthetic.species import species

__all__ = [
    "BIRD_PARTS",
    "CAPTIONS_PER_IMAGE",
    "COLOUR_JITTER",
    "COLOUR_NAMES",
    "DATASETS",
    "FLOWER_PARTS",
    "GENERATOR_VERSION",
    "MAX_CAPTION_WORDS",
    "NO_WING_BARS",
    "SyntheticSpec",
    "attribute_values",
    "colour_attributes",
    "colour_palette",
    "draw_scene",
    "edit_scene",
    "image_seed",
    "nearest_colour",
    "part_coverage",
    "part_words",
    "parts",
    "prepare_synthetic",
    "render",
    "scene_captions",
    "species",
    "supersampling",
]
