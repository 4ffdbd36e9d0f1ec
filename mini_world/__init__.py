"""The mini world: a small exact world where the whole paper runs on a CPU.

``world`` generates its prompts (GenEval's six task types and glyph text), renders their images (coloured shapes on
a 3 x 3 grid, a 3 x 5 glyph font) and perceives images exactly (shapes, colours, positions, glyphs, image quality),
which the mini scorers turn into GenEval's verdict, Flow-GRPO's OCR reward and a quality score.
``python -m mini_world [FOLDER]`` writes its prompt files (default: harness/prompts/mini). It imports nothing of the
project: the model layer (``flowmodels.mini``), the scorers and the recipes sit above it.
"""
