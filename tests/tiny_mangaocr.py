"""A tiny randomly initialised MangaOCR model for tests, written to disk as `kha-white/manga-ocr-base` is laid out.

The same parts as the real model, only small: a `VisionEncoderDecoderModel` (ViT encoder + BERT decoder
with cross-attention), a character vocabulary read by `BertJapaneseTokenizer` (word tokenizer `basic`,
subword tokenizer `character`), and a `ViTImageProcessor`, each saved with `save_pretrained`, so that
`manga_ocr.MangaOcr(directory)` loads it through exactly the code paths it uses for the real one.

The weights are random (seeded), so what it reads is noise. One deliberate bias keeps that noise short
and never empty (see `_bias_output`): every answer is `OUTPUT_CHAR` once, then `[SEP]` — two decoder
steps instead of the 300 that `MangaOcr` allows.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Hiragana and katakana, the ASCII letters and digits, some punctuation: a character vocabulary.
CHARACTERS = (
    [chr(c) for c in range(0x3041, 0x3097)]
    + [chr(c) for c in range(0x30A1, 0x30FB)]
    + list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    + list("、。！？「」ー・…")
)
OUTPUT_CHAR = "ノ"
IMAGE_SIZE = 32
PATCH_SIZE = 8
HIDDEN = 32


def write_tiny_mangaocr(directory: Path, seed: int = 0) -> Path:
    """Write the model, tokenizer and image processor into `directory` (created); return it."""
    return write_mangaocr(directory, seed=seed)


# The shapes of `kha-white/manga-ocr-base`: ViT-base 224/16 encoder, 2-layer BERT-base decoder, 6,144 tokens.
REAL_SIZE = {
    "image_size": 224,
    "patch_size": 16,
    "hidden": 768,
    "encoder_layers": 12,
    "decoder_layers": 2,
    "heads": 12,
    "intermediate": 3072,
    "vocab_size": 6144,
}


def write_mangaocr(
    directory: Path,
    *,
    seed: int = 0,
    output: str = "short",
    image_size: int = IMAGE_SIZE,
    patch_size: int = PATCH_SIZE,
    hidden: int = HIDDEN,
    encoder_layers: int = 1,
    decoder_layers: int = 1,
    heads: int = 2,
    intermediate: int = 64,
    vocab_size: int | None = None,
) -> Path:
    """A MangaOCR-shaped random model of any size. `output`: "short" (`OUTPUT_CHAR`, then `[SEP]`),
    "noise" (whatever the random weights say, up to the length limit: differs from image to image) or
    "endless" (noise that never ends with `[SEP]`: every answer runs to the length limit)."""
    import torch
    from transformers import (
        BertConfig,
        BertJapaneseTokenizer,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = SPECIALS + CHARACTERS
    if vocab_size is not None:  # filled up with kanji, as the real vocabulary is
        vocab = (vocab + [chr(c) for c in range(0x4E00, 0x4E00 + vocab_size)])[:vocab_size]
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertJapaneseTokenizer(
        str(vocab_file),
        do_lower_case=False,
        word_tokenizer_type="basic",
        subword_tokenizer_type="character",
        model_max_length=300,
    )
    tokenizer.save_pretrained(directory)

    processor = ViTImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor.save_pretrained(directory)

    encoder = ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=encoder_layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
    )
    decoder = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=decoder_layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=512,
        is_decoder=True,
        add_cross_attention=True,
        tie_word_embeddings=False,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = vocab.index("[CLS]")
    config.pad_token_id = vocab.index("[PAD]")
    config.eos_token_id = vocab.index("[SEP]")
    config.vocab_size = len(vocab)

    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=config)
    if output == "short":
        _bias_output(model, vocab, processor)
    elif output == "endless":
        _never_end(model, vocab)
    else:
        _listen_to_the_image(model)
    model.generation_config.decoder_start_token_id = config.decoder_start_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.save_pretrained(directory)
    return directory


def _bias_output(model, vocab: list[str], processor) -> None:
    """Make every answer `OUTPUT_CHAR` then `[SEP]`, whatever the image.

    Position embeddings: 0 at the first decoder position, a large fixed vector from the second on, so the
    decoder's features at the first step and at later steps sit far apart. The output row of `[SEP]` is
    set along their difference and its bias so that `[SEP]` loses at the first step and wins afterwards;
    `OUTPUT_CHAR`'s bias makes it win the first step over the (small, random) rest.
    """
    import numpy as np
    import torch
    from PIL import Image

    sep, char = vocab.index("[SEP]"), vocab.index(OUTPUT_CHAR)
    decoder = model.decoder
    heads = decoder.cls.predictions
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        positions = decoder.bert.embeddings.position_embeddings.weight
        direction = torch.randn(positions.shape[1], generator=generator)
        positions[0].zero_()
        positions[1:] = 8.0 * direction / direction.norm()
        bias = torch.zeros_like(heads.bias)
        bias[char] = 10.0
        _set_output_bias(heads, bias)

        features: list[torch.Tensor] = []
        hook = heads.transform.register_forward_hook(lambda _m, _i, out: features.append(out))
        rng = np.random.default_rng(2)
        images = [Image.new("RGB", (48, 48), shade) for shade in ("white", "black", "gray")]
        images += [Image.fromarray(rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)) for _ in range(5)]
        pixels = processor(images, return_tensors="pt").pixel_values
        tokens = torch.tensor([[vocab.index("[CLS]"), char, char]] * len(images))
        model.eval()
        model(pixel_values=pixels, decoder_input_ids=tokens)
        hook.remove()
        first, later = features[0][:, 0], features[0][:, 1:].reshape(-1, features[0].shape[-1])
        row = later.mean(0) - first.mean(0)
        low, high = (first @ row).max(), (later @ row).min()
        scale = 40.0 / (high - low)
        heads.decoder.weight[sep] = scale * row
        bias[sep] = -scale * low - 10.0  # first step: [SEP] at most -10; later: at least 30
        _set_output_bias(heads, bias)


def _set_output_bias(heads, bias) -> None:
    # BertLMPredictionHead has a `bias` and its `decoder` Linear has one; which one the forward pass uses,
    # and whether they are one tensor, changed across transformers releases: set both.
    heads.bias.copy_(bias)
    if heads.decoder.bias is not None:
        heads.decoder.bias.copy_(bias)


def _never_end(model, vocab: list[str]) -> None:
    """`[SEP]` never wins: every answer runs to the length limit (a fixed number of decoder steps)."""
    import torch

    heads = model.decoder.cls.predictions
    with torch.no_grad():
        bias = heads.bias.detach().clone()
        bias[vocab.index("[SEP]")] = -100.0
        _set_output_bias(heads, bias)


def _listen_to_the_image(model) -> None:
    """Cross-attention made loud, so that the noise read differs from image to image."""
    import torch

    with torch.no_grad():
        for layer in model.decoder.bert.encoder.layer:
            layer.crossattention.output.dense.weight.mul_(30.0)
