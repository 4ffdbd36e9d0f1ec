"""Scorers for the mini world (``mini_world.world``): exact perception feeding the same rules as the real metrics.

- ``mini_geneval``: the world's exact detector (palette components, template IoU) produces GenEval detections with
  their colours, and the **same** rule engine as ``geneval`` (``scorers.geneval_rules``) judges them: values are
  the official 0/1 verdict, rewards Flow-GRPO's partial-credit score, details the tag and strict verdict.
- ``mini_ocr``: the glyph reader's text goes through the **same** reward as ``ocr`` (``scorers.ocr.ocr_reward`` on
  the first quoted span).
- ``mini_quality``: half the share of on-palette pixels, half the share of drawn pixels in well-formed shapes and
  readable glyphs (``mini_world.world.quality``), the world's image-quality signal (the role DeQA and the aesthetic
  score play for real models). Version 1 was the on-palette share alone, which every model here saturated (0.98).

They need no weights and run anywhere; images of another size are resized (nearest) to the world's 32 x 32.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from flowbase.errors import InputError
from mini_world import world
from scorers import geneval_rules as rules
from scorers.base import MetaNeed, Requirements, Scores, check_meta
from scorers.images import check_lengths, to_rgb_batch
from scorers.ocr import ocr_reward, target_text


def _world_images(
    images: list[Image.Image], prompts: list[str], meta: list[dict[str, Any]] | None
) -> list[Any]:
    check_lengths(images, prompts, meta)
    rgb = to_rgb_batch(images)
    return [
        im if im.size == (world.SIZE, world.SIZE) else im.resize((world.SIZE,) * 2, Image.NEAREST)
        for im in rgb
    ]


class MiniGenEval:
    """GenEval's rules on the mini world's exact detections (metadata per image: a mini GenEval line)."""

    name = "mini_geneval"
    version = "1"
    requires = Requirements(
        meta=MetaNeed(
            rules.META_FIELDS,
            "the rows of harness/prompts/mini/geneval_test.jsonl carry it: pass such a .jsonl file as "
            "--prompts, or the manifest.jsonl of `harness generate --benchmark mini_geneval` as --manifest",
        )
    )

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        check_meta(self.name, self.requires, meta)
        assert meta is not None  # check_meta refuses None
        imgs = _world_images(images, prompts, meta)
        for i, m in enumerate(meta):
            try:
                rules.check_metadata(m)
            except ValueError as e:
                raise InputError(f"meta {i}: {e}") from None
        values, rewards, details = [], [], []
        for img, m in zip(imgs, meta, strict=True):
            found: dict[str, list[rules.Detection]] = {}
            for d in world.detect(img):
                found.setdefault(d.cls, []).append(rules.Detection(d.box, d.score, color=d.color))
            kept = rules.keep_detections(found, m["tag"])
            verdict = rules.judge(kept, m)
            reward = rules.flowgrpo_reward(kept, m)
            values.append(float(verdict.correct))
            rewards.append(float(reward.score))
            details.append(
                {
                    "tag": m["tag"],
                    "strict": reward.strict_correct,
                    "reasons": verdict.reasons,
                    "found": {c: len(v) for c, v in kept.items()},
                }
            )
        return Scores(values, rewards, details)


class MiniOCR:
    """Flow-GRPO's OCR reward on the text the glyph reader sees."""

    name = "mini_ocr"
    version = "1"
    requires = Requirements()

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        imgs = _world_images(images, prompts, meta)
        targets = [target_text(p) for p in prompts]
        read = [world.read_text(im) for im in imgs]
        values = [ocr_reward(r, t) for r, t in zip(read, targets, strict=True)]
        details = [{"read": r, "target": t} for r, t in zip(read, targets, strict=True)]
        return Scores(values, list(values), details)


class MiniQuality:
    """Clean pixels and well-formed content: 1 for a ground-truth image, lower for noise, blur, fragments and blobs."""

    name = "mini_quality"
    version = "2"
    requires = Requirements()

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        values = [world.quality(im) for im in _world_images(images, prompts, meta)]
        return Scores(values, list(values), None)
