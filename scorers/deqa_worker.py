"""DeQA-Score worker: loads mPLUG-Owl2 in its own environment and serves ``POST /v1/score`` for ``scorers.deqa``.

Run it where ``transformers==4.36.1`` is installed (see ``scorers/deqa.py``)::

    python -m scorers.deqa_worker --port 18086 --device cuda [--model PATH_OR_ID] [--method hf|repo]

Methods (both give raw 1-5 scores, reward = score / 5):

- ``hf`` (default, Flow-GRPO's reward server): the Hugging Face remote code's ``model.score(images)``.
- ``repo`` (DeQA-Score ``src/evaluate/scorer.py``): our tested ``expand2square`` + the checkpoint's CLIP image
  processor + ``tokenize_with_image(PROMPT)`` + a forward pass + ``level_weighted_score`` on the five level logits.

The two should agree; compare them on the first real run (the reference notes a possible prompt-string difference
inside the remote ``score``). Nothing heavy is imported at module level, so ``--help`` works anywhere.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from PIL import Image

from flowbase.errors import InputError, MissingError
from scorers.base import Requirements, Scores
from scorers.deqa import (
    LEVELS,
    MODEL_ID,
    PROMPT,
    REWARD_DIVISOR,
    background_colour,
    expand2square,
    level_weighted_score,
    tokenize_with_image,
)
from scorers.images import check_lengths, to_rgb_batch
from scorers.remote import SCORE_PATH, ScoreServer

log = logging.getLogger(__name__)

METHODS = ("hf", "repo")


class DeQAModel:
    """The DeQA-Score model itself (only inside the worker environment)."""

    name = "deqa"
    version = "1-hf"
    requires = Requirements(weights=(MODEL_ID,), gpu_gb=16.0)

    def __init__(
        self, model: str = MODEL_ID, device: str = "cuda", method: str = "hf", batch_size: int = 16
    ) -> None:
        if method not in METHODS:
            raise InputError(f"unknown DeQA method {method!r}; choose one of {', '.join(METHODS)}")
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        if not transformers.__version__.startswith("4.36"):
            log.warning(
                "DeQA-Score's remote code is known to work with transformers 4.36.1, not %s",
                transformers.__version__,
            )
        self.torch, self.device, self.method, self.batch_size = torch, device, method, batch_size
        self.version = f"1-{method}"
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        try:
            self.model = AutoModelForCausalLM.from_pretrained(
                model, trust_remote_code=True, attn_implementation="eager", torch_dtype=dtype
            )
        except OSError as e:
            raise MissingError(
                f"DeQA weights {model!r} not found ({str(e).splitlines()[0]}); "
                f"run `harness fetch deqa` on a machine with hub access, or pass --model with a local copy of {MODEL_ID}"
            ) from None
        self.model.to(device).eval().requires_grad_(False)
        if method == "repo":
            from transformers import AutoTokenizer, CLIPImageProcessor

            tokenizer = AutoTokenizer.from_pretrained(model, use_fast=False)
            self.image_processor = CLIPImageProcessor.from_pretrained(model)
            self.level_ids = [tokenizer(word)["input_ids"][1] for word in LEVELS]  # [0] is BOS
            ids = tokenize_with_image(
                PROMPT, lambda s: tokenizer(s)["input_ids"], tokenizer.bos_token_id
            )
            self.input_ids = torch.tensor([ids], device=device)
            self.background = background_colour(self.image_processor.image_mean)

    def _repo_scores(self, images: list[Image.Image]) -> list[float]:
        square = [expand2square(im, self.background) for im in images]
        pixels = self.image_processor.preprocess(square, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, dtype=self.model.dtype)
        logits = self.model(input_ids=self.input_ids.repeat(len(images), 1), images=pixels)[
            "logits"
        ]
        return level_weighted_score(logits[:, -1, self.level_ids].float().cpu().numpy()).tolist()

    def __call__(
        self,
        images: list[Image.Image],
        prompts: list[str],
        meta: list[dict[str, Any]] | None = None,
    ) -> Scores:
        check_lengths(images, prompts, meta)
        rgb = to_rgb_batch(images)
        values: list[float] = []
        with self.torch.inference_mode():
            for start in range(0, len(rgb), self.batch_size):
                chunk = rgb[start : start + self.batch_size]
                if self.method == "hf":
                    values += [float(v) for v in self.model.score(chunk)]
                else:
                    values += self._repo_scores(chunk)
        return Scores(
            values, [v / REWARD_DIVISOR for v in values], [{"method": self.method} for _ in values]
        )


def main(argv: list[str] | None = None) -> None:
    """Serve DeQA-Score over the RemoteScorer wire format."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=MODEL_ID, help="hub id or local folder of DeQA-Score-Mix3"
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--method", choices=METHODS, default="hf")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=18086)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    scorer = DeQAModel(args.model, args.device, args.method, args.batch_size)
    server = ScoreServer({"deqa": scorer}, args.host, args.port)
    log.info("DeQA-Score (%s) on %s%s", args.method, server.url, SCORE_PATH)
    server.serve_forever()


if __name__ == "__main__":  # pragma: no cover
    main()
