"""The Tesseract engine: the `tesseract` CLI per image (no shell), TSV words grouped into lines with boxes.

Tesseract never parses attacker bytes: the image, decoded and size-checked by Pillow, reaches it as a
PGM on stdin. Each run is bounded: a deadline (the whole process group is killed past it), an
address-space limit, OMP_THREAD_LIMIT. One pass with `jpn+jpn_vert+eng` and automatic layout (psm 3)
reads horizontal Japanese, vertical Japanese and English on the same page: the layout analysis finds
vertical blocks and recognises them with the vertical model. Where a page has speech bubbles, caption
boxes or vertical lines it was unsure of, those are read again on their own (vertical.py), within
`vertical_budget`: each such read is a strategy of its own, and so a view of its own; a bubble left
unread then makes the image incomplete (OcrIncomplete, `vertical_budget_spent`). A panel's textured
background is cleaned away before the first pass (background.py).
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from PIL import Image

from dropwarden.findings import bbox_union
from dropwarden_ocr import background, reread, stitch, vertical
from dropwarden_ocr.engine import BBox, OcrError, OcrIncomplete, OcrRegion

if TYPE_CHECKING:
    from dropwarden_ocr.settings import TesseractSettings

INSTALL_HINT = "apt install tesseract-ocr tesseract-ocr-jpn tesseract-ocr-jpn-vert tesseract-ocr-eng"
_STDERR_CHARS = 300
# Between two narrow (Latin, digit) words, a gap wider than this share of the line's thickness is a
# space; narrower gaps, and any boundary with a CJK character, join without one (Japanese has none).
_SPACE_GAP = 0.2
# A vertical line the first pass read with at least this mean confidence is not read again
_SURE_VERTICAL = 0.8
_PANE_MARGIN, _PANE_GAP = 20, 60  # pixels of white around each pane of a second read, and between panes
_LEVELS = {"block": 2, "paragraph": 3, "line": 4}

Level = Literal["block", "paragraph", "line"]


@dataclass(frozen=True)
class Probe:
    """What is installed: the binary's path and version and its languages, or why it cannot run."""

    path: str | None
    version: str = ""
    languages: tuple[str, ...] = ()
    problem: str | None = None

    def missing(self, wanted: str) -> list[str]:
        return [lang for lang in wanted.split("+") if lang not in self.languages]


_probed: dict[tuple[str, str | None], Probe] = {}


def probe(binary: str = "tesseract", tessdata_dir: str | None = None) -> Probe:
    """Find the binary, its version and languages (`--version`, `--list-langs`). A working install is
    remembered for the process; a missing one is looked for again (installed later, then reloaded)."""
    key = (binary, tessdata_dir)
    if key not in _probed:
        found = _probe(binary, tessdata_dir)
        if found.problem is not None:
            return found
        _probed[key] = found
    return _probed[key]


def _probe(binary: str, tessdata_dir: str | None) -> Probe:
    path = shutil.which(binary)
    if path is None:
        return Probe(None, problem=f"{binary!r} not found ({INSTALL_HINT})")
    data = ["--tessdata-dir", tessdata_dir] if tessdata_dir else []
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, env=_env(1)
        ).stdout.split("\n", 1)[0]
        listed = subprocess.run(
            [path, *data, "--list-langs"], capture_output=True, text=True, timeout=10, env=_env(1)
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return Probe(path, problem=f"{path} does not run: {exc}")
    languages = tuple(line.strip() for line in listed.stdout.splitlines()[1:] if line.strip())
    if listed.returncode != 0:
        return Probe(path, version, problem=f"{path} --list-langs failed: {_tail(listed.stderr)}")
    return Probe(path, version.removeprefix("tesseract ").strip(), languages)


@dataclass(frozen=True)
class Word:
    """One TSV word row: its place in the layout, box, confidence (0..100) and text."""

    block: int
    paragraph: int
    line: int
    box: BBox
    confidence: float
    text: str


@dataclass
class Tsv:
    """Parsed TSV: the words, and the layout boxes per level (2 block, 3 paragraph, 4 line)."""

    words: list[Word] = field(default_factory=list)
    layout: dict[int, list[tuple[tuple[int, ...], BBox]]] = field(default_factory=dict)


def parse_tsv(tsv: str) -> Tsv:
    out = Tsv()
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t", 11)
        if len(cols) < 11:
            continue
        try:
            level, _page, block, par, line, _word, left, top, width, height = map(int, cols[:10])
            confidence = float(cols[10])
        except ValueError:
            continue
        box = (left, top, left + width, top + height)
        if level == 5:
            text = cols[11].strip() if len(cols) > 11 else ""
            if text:
                out.words.append(Word(block, par, line, box, confidence, text))
        elif level in (2, 3, 4):
            key = (block, par, line)[: level - 1]
            out.layout.setdefault(level, []).append((key, box))
    return out


def lines_to_regions(words: list[Word], min_confidence: float = 0.0) -> list[OcrRegion]:
    """One region per layout line, in reading order: the words joined, each word's box as a part."""
    lines: dict[tuple[int, int, int], list[Word]] = {}
    threshold = min_confidence * 100
    for word in words:
        if word.confidence >= threshold or word.confidence < 0:
            lines.setdefault((word.block, word.paragraph, word.line), []).append(word)
    return [_region(line) for line in lines.values() if line]


def _region(words: list[Word]) -> OcrRegion:
    box = bbox_union([w.box for w in words])
    vertical = _is_vertical(words, box)
    thickness = statistics.median((w.box[2] - w.box[0]) if vertical else (w.box[3] - w.box[1]) for w in words)
    text = ""
    parts: list[tuple[int, int, BBox]] = []
    previous: Word | None = None
    for word in words:
        if previous is not None and _narrow(previous.text[-1]) and _narrow(word.text[0]):
            gap = word.box[1] - previous.box[3] if vertical else word.box[0] - previous.box[2]
            if gap > _SPACE_GAP * thickness:
                text += " "
        parts.append((len(text), len(text) + len(word.text), word.box))
        text += word.text
        previous = word
    confidences = [w.confidence for w in words if w.confidence >= 0]
    confidence = sum(confidences) / len(confidences) / 100 if confidences else None
    return OcrRegion(text, box, confidence, vertical, tuple(parts))


def _is_vertical(words: list[Word], box: BBox) -> bool:
    """A line much taller than wide whose words (if several) go down the page."""
    if len(words) == 1 and len(words[0].text) < 2:
        return False
    tall = (box[3] - box[1]) > 2 * (box[2] - box[0])
    downwards = all(b.box[1] >= a.box[1] for a, b in itertools.pairwise(words))
    return tall and downwards


def _unscaled(box: BBox, scale: float) -> BBox:
    if scale == 1.0:
        return box
    return (int(box[0] / scale), int(box[1] / scale), math.ceil(box[2] / scale), math.ceil(box[3] / scale))


_narrow = stitch.narrow


class TesseractEngine:
    """`OcrEngine` over the tesseract CLI, configured by `[ocr.tesseract]`."""

    name = "tesseract"

    def __init__(self, settings: TesseractSettings, *, min_confidence: float = 0.0) -> None:
        self.settings = settings
        self.min_confidence = min_confidence
        self.tessdata_dir = str(settings.tessdata_dir) if settings.tessdata_dir else None
        found = probe(settings.binary, self.tessdata_dir)
        if found.problem:
            raise OcrError("detector_error", found.problem)
        missing = found.missing(settings.languages)
        if missing:
            raise OcrError(
                "detector_error",
                f"tesseract has no language data for {', '.join(missing)}"
                f" (have: {', '.join(found.languages) or 'none'}; {INSTALL_HINT})",
            )
        self.path = found.path or settings.binary
        self.model = settings.languages
        self.version = f"{found.version} psm {settings.psm}"
        # Layout analysis needs some language to run: `region_languages` (osd), else the recognition ones.
        wanted = settings.region_languages
        self.region_languages = wanted if not found.missing(wanted) else settings.languages
        vertical_wanted = settings.vertical_languages
        self.vertical_languages = (
            vertical_wanted if not found.missing(vertical_wanted) else settings.languages
        )

    def recognise(self, image: Image.Image, deadline: float) -> list[OcrRegion]:
        """The page-wide layout pass (on a panel whose background is textured, on the page with the
        texture cleaned away: `background.cleaned`); then, where the page has speech bubbles or vertical
        blocks, a second read of them alone as one vertical block (regions of strategy "vertical")."""
        found = vertical.find_bubbles(image, 2 * self.settings.max_vertical_blocks)
        clean = background.cleaned(image, found) if self.settings.clean_background else None
        page = image if clean is None else clean
        tsv = parse_tsv(self._run(page, deadline, self.settings.languages, self.settings.psm))
        lines = lines_to_regions(tsv.words, self.min_confidence)
        regions = stitch.joined(lines)
        if self.settings.vertical_reads:
            cleaned = clean is not None
            # the layout's own lines (not those stitched) pick the blocks to read again, block by block
            more, unread = self._vertical_read(image, tsv, lines, found, deadline, captions_read=cleaned)
            regions += more
            if unread and self.settings.vertical_budget_spent == "unscanned":
                detail = f"{unread} not read within ocr.tesseract.vertical_budget or the image's timeout"
                raise OcrIncomplete("timeout", detail, regions)
        return regions + self._reread_lines(page, regions, deadline)

    def _reread_lines(self, image: Image.Image, first: list[OcrRegion], deadline: float) -> list[OcrRegion]:
        """Up to `line_rereads` lines of the first pass with a value's label but no value read, each read
        again alone (reread.py; strategy "lines"), while the image's time lasts: a bonus, whose reads
        left out leave the image complete."""
        out: list[OcrRegion] = []
        languages = "+".join(x for x in self.model.split("+") if not x.endswith("_vert")) or self.model
        for line in reread.suspects(first, self.settings.line_rereads):
            picture, (left, top) = reread.line_image(image, line)
            try:
                text = self._run(picture, deadline, languages, 7)
            except OcrError as exc:
                if exc.reason == "timeout":
                    break
                raise

            def back(box: BBox, left: int = left, top: int = top) -> BBox:
                box = _unscaled(box, reread.SCALE)
                return (box[0] + left, box[1] + top, box[2] + left, box[3] + top)

            for region in lines_to_regions(parse_tsv(text).words, self.min_confidence):
                parts = tuple((a, b, back(box)) for a, b, box in region.parts)
                moved = replace(region, bbox=back(region.bbox), parts=parts, vertical=False)
                out.append(replace(moved, strategy="lines"))
        return out

    def _vertical_read(
        self,
        image: Image.Image,
        tsv: Tsv,
        first: list[OcrRegion],
        found: list[vertical.Block],
        deadline: float,
        *,
        captions_read: bool = False,
    ) -> tuple[list[OcrRegion], str]:
        """Second reads, within `vertical_budget` seconds in all (and the image's deadline): speech
        bubbles (`found`, tall ones) and the first pass's blocks with vertical lines it was unsure of,
        whitened around and binarised on a blank page, read with `--psm 5` (strategy "vertical");
        caption boxes (wide white boxes on a textured panel) likewise, read with the page languages and
        layout (strategy "captions"), unless the first pass read them already (`captions_read`: it read
        the cleaned page, where they stand as they are). Past the budget a read is given up: returns the
        regions read and what was left unread ("2 bubbles and blocks, 1 caption box", "" when all
        was read; the bubbles' extra read at 1.5x is a bonus, never counted); any other failure raises
        OcrError as for the first pass."""
        started = time.monotonic()
        budget_end = min(deadline, started + self.settings.vertical_budget)
        limit = self.settings.max_vertical_blocks
        blocks = [b for b in found if b.tall][:limit]
        captions = [] if captions_read else [b for b in found if not b.tall][:limit]
        taken = [b.box for b in blocks]
        layout = [box for _key, box in tsv.layout.get(_LEVELS["block"], [])]
        unsure = [r.bbox for r in first if r.vertical and (r.confidence or 0) < _SURE_VERTICAL]
        for block in vertical.tall_blocks(layout, unsure, limit):
            if len(blocks) < limit and not any(vertical._inside(block.box, box) for box in taken):
                blocks.append(block)
        out: list[OcrRegion] = []
        unread: list[str] = []
        scale = vertical.upscale_for(blocks, image.size) if blocks else 1.0  # 1.0 or 2.0
        bubbles = [b for b in blocks if b.mask is not None]
        reads = (
            # the vertical model misreads a digit at one scale and not at another: the bubbles once
            # more at 1.5x, beside them in the same run (bubbles only: the first pass read docs well)
            ([(blocks, scale, "vertical"), (bubbles, 1.5, "vertical-rescaled")], self.vertical_languages, 5),
            ([(captions, 1.0, "captions")], self.settings.languages, self.settings.psm),
        )
        for panes, languages, psm in reads:
            chosen = [pane for pane in panes if pane[0]]
            if chosen:
                read = self._read_panes(image, chosen, budget_end, languages, psm)
                if read is None:
                    what = "caption box(es)" if chosen[0][2] == "captions" else "bubble(s) and block(s)"
                    unread.append(f"{len(chosen[0][0])} {what}")
                out += read or []
        return out, ", ".join(unread)

    def _read_panes(
        self,
        image: Image.Image,
        panes: list[tuple[list[vertical.Block], float, str]],
        end: float,
        languages: str,
        psm: int,
    ) -> list[OcrRegion] | None:
        """Each pane (blocks, scale, strategy): the blocks alone on a blank page `scale` times larger,
        cut to where they lie; the panes side by side, read in one run (the language data loaded once),
        each region given its pane's strategy and page pixels. None when `end` comes first."""
        pieces: list[tuple[Image.Image, int, int]] = []  # the cut pane and its origin in scaled pixels
        for blocks, scale, _strategy in panes:
            page = vertical.composite(image, blocks, scale)
            union = bbox_union([b.box for b in blocks])
            x0, y0 = (
                max(0, int(union[0] * scale) - _PANE_MARGIN),
                max(0, int(union[1] * scale) - _PANE_MARGIN),
            )
            x1 = min(page.width, math.ceil(union[2] * scale) + _PANE_MARGIN)
            y1 = min(page.height, math.ceil(union[3] * scale) + _PANE_MARGIN)
            pieces.append((page.crop((x0, y0, x1, y1)), x0, y0))
        lefts = list(itertools.accumulate((p.width + _PANE_GAP for p, _, _ in pieces[:-1]), initial=0))
        sheet = Image.new("L", (lefts[-1] + pieces[-1][0].width, max(p.height for p, _, _ in pieces)), 255)
        for (piece, _, _), left in zip(pieces, lefts, strict=True):
            sheet.paste(piece, (left, 0))
        try:
            text = self._run(sheet, end, languages, psm)
        except OcrError as exc:
            if exc.reason == "timeout":
                return None  # the second reads' budget (or the image's time) spent
            raise
        out = []
        for region in lines_to_regions(parse_tsv(text).words, self.min_confidence):
            k = bisect.bisect_right(lefts, (region.bbox[0] + region.bbox[2]) / 2) - 1
            (_blocks, scale, strategy), (_piece, x0, y0) = panes[k], pieces[k]
            dx, dy = x0 - lefts[k], y0

            def back(box: BBox, dx: int = dx, dy: int = dy, scale: float = scale) -> BBox:
                return _unscaled((box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy), scale)

            parts = tuple((a, b, back(box)) for a, b, box in region.parts)
            moved = replace(region, bbox=back(region.bbox), parts=parts, strategy=strategy)
            out.append(replace(moved, vertical=True) if psm == 5 else moved)
        return out

    def _run(self, image: Image.Image, deadline: float, languages: str, psm: int) -> str:
        return run_tesseract(
            image,
            deadline,
            path=self.path,
            languages=languages,
            psm=psm,
            threads=self.settings.threads,
            max_memory_mib=self.settings.max_memory_mib,
            tessdata_dir=self.tessdata_dir,
        )

    def find_regions(self, image: Image.Image, deadline: float) -> list[BBox]:
        """Text regions for an engine that reads one block per call (MangaOCR): layout boxes only."""
        return tesseract_regions(
            image,
            deadline,
            binary=self.path,
            languages=self.region_languages,
            psm=self.settings.psm,
            level=self.settings.region_level,
            threads=self.settings.threads,
            max_memory_mib=self.settings.max_memory_mib,
            tessdata_dir=self.tessdata_dir,
        )


def tesseract_regions(
    image: Image.Image,
    deadline: float,
    *,
    binary: str = "tesseract",
    languages: str = "osd",
    psm: int = 3,
    level: Level = "block",
    threads: int = 1,
    max_memory_mib: int = 1024,
    tessdata_dir: str | None = None,
) -> list[BBox]:
    """Boxes of the text blocks (paragraphs, lines) Tesseract's layout analysis finds, in reading
    order, in pixels of `image`. Layout does not depend on the language; `osd` recognises fastest.
    Raises OcrError ("timeout", "detector_error") like `recognise`."""
    tsv = parse_tsv(
        run_tesseract(
            image,
            deadline,
            path=binary,
            languages=languages,
            psm=psm,
            threads=threads,
            max_memory_mib=max_memory_mib,
            tessdata_dir=tessdata_dir,
        )
    )
    depth = _LEVELS[level] - 1
    with_words = {(w.block, w.paragraph, w.line)[:depth] for w in tsv.words}
    return [box for key, box in tsv.layout.get(_LEVELS[level], []) if key in with_words]


def run_tesseract(
    image: Image.Image,
    deadline: float,
    *,
    path: str,
    languages: str,
    psm: int,
    threads: int = 1,
    max_memory_mib: int = 1024,
    tessdata_dir: str | None = None,
) -> str:
    """Tesseract's TSV for `image` (grey PGM on stdin). Raises OcrError("timeout") past `deadline`
    (the process group is killed) and OcrError("detector_error") when it fails or is killed."""
    budget = deadline - time.monotonic()
    if budget <= 0:
        raise OcrError("timeout", "no time left for tesseract")
    grey = image if image.mode == "L" else image.convert("L")
    pgm = b"P5\n%d %d\n255\n" % grey.size + grey.tobytes()
    data = ["--tessdata-dir", tessdata_dir] if tessdata_dir else []
    command = [path, *data, "-", "-", "-l", languages, "--psm", str(psm), "-c", "tessedit_create_tsv=1"]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(threads),
            process_group=0,
            preexec_fn=_limit_memory(max_memory_mib),
        )
    except OSError as exc:
        raise OcrError("detector_error", f"cannot run {path}: {exc}") from None
    try:
        stdout, stderr = process.communicate(pgm, timeout=budget)
    except subprocess.TimeoutExpired:
        _kill(process)
        raise OcrError("timeout", f"tesseract did not finish within {budget:.1f}s") from None
    except BaseException:
        _kill(process)
        raise
    if process.returncode != 0:
        raise OcrError("detector_error", _failure(process.returncode, stderr, max_memory_mib))
    return stdout.decode("utf-8", errors="replace")


def _limit_memory(mib: int) -> Callable[[], None]:
    """A preexec function setting RLIMIT_AS. It runs between fork and exec, so it only makes one system
    call through a module imported beforehand: no lock another thread could hold is needed."""
    limit = mib * 1024 * 1024
    setrlimit, which = resource.setrlimit, resource.RLIMIT_AS

    def apply() -> None:
        setrlimit(which, (limit, limit))

    return apply


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.communicate()


def _failure(code: int, stderr: bytes, mib: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = f" (memory limit {mib} MiB: ocr.tesseract.max_memory_mib)" if name == "SIGABRT" else ""
        return f"tesseract killed by {name}{hint}: {_tail(stderr)}"
    return f"tesseract exited with status {code}: {_tail(stderr)}"


def _tail(stderr: bytes | str) -> str:
    text = stderr.decode("utf-8", errors="replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Estimating resolution")] or lines
    message = lines[-1] if lines else "no message"
    return message if len(message) <= _STDERR_CHARS else message[: _STDERR_CHARS - 1] + "…"


def _env(threads: int) -> dict[str, str]:
    """A minimal environment: no inherited TESSDATA_PREFIX or locale surprises."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_THREAD_LIMIT": str(threads), "LC_ALL": "C"}
