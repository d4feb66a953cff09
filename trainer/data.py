"""Dataset preparation: a labeled CSV in, deterministic stratified train/validation/test out.

Steps, each counted in the drop report: rows without a label, Neutral rows, empty texts, the
text pipeline's skips (non-English, too short, nothing left after cleaning), duplicates after
cleaning, and cleaned texts seen with conflicting labels (every copy dropped: there is no way
to know which label is right, and keeping one would put a coin flip into the test set).

The split does not depend on row order. Each (unique, cleaned) text gets a rank from
sha256(split_seed, text); within each class the lowest ranks go to test, the next to
validation, the rest to train. Reordering, appending or deleting rows therefore moves no other
row between splits, and the same CSV and options always give the same split. `max_samples`
keeps a stratified subsample with the same ranks, so every kept row stays in the split it has
in the full data: a quick run never trains on a row the full test split holds.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ops.errors import UserError
from ops.settings import DataSettings, TextSettings
from schemas.messages import SkipReason

__all__ = [
    "LABEL_IDS",
    "LABEL_NAMES",
    "MIN_PER_CLASS_PER_SPLIT",
    "STEP_LABELS",
    "CleanedData",
    "DropReport",
    "Example",
    "PreparedData",
    "clean_dataset",
    "csv_fingerprint",
    "prepare_data",
    "split_dataset",
]

LABEL_IDS: dict[str, int] = {"Negative": 0, "Positive": 1}
LABEL_NAMES: tuple[str, ...] = ("Negative", "Positive")
# Fewer than this many examples of a class in any split makes its metrics meaningless.
MIN_PER_CLASS_PER_SPLIT = 2

Example = tuple[str, int]  # (cleaned text, 0=NEGATIVE / 1=POSITIVE)

# Drop steps in the order they run; the keys appear in reports and artifacts.
STEP_LABELS: dict[str, str] = {
    "label_missing": "label missing",
    "neutral": "Neutral dropped",
    "empty_text": "empty text",
    SkipReason.NON_ENGLISH.value: "non-English",
    SkipReason.TOO_SHORT.value: "too short after cleaning",
    SkipReason.EMPTY_AFTER_CLEANING.value: "empty after cleaning",
    "duplicate": "duplicates after cleaning",
    "conflicting_labels": "conflicting labels (all copies)",
    # Only with several sources (trainer.sources).
    "duplicate_across_sources": "duplicates of an earlier source's rows",
    "conflicting_across_sources": "conflicting labels across sources (all copies)",
    "max_samples": "max_samples subsample",
}


@dataclass(frozen=True, slots=True)
class DropReport:
    """How many rows each step removed, in order, and what is left."""

    raw_rows: int
    steps: tuple[tuple[str, int], ...]
    # Rows the text pipeline looked at, so that non-English can be given as a share of them.
    pipeline_rows: int
    # Distinct cleaned texts that carried more than one label.
    conflicting_texts: int
    class_counts: dict[str, int]

    @property
    def kept(self) -> int:
        return sum(self.class_counts.values())

    def removed(self, step: str) -> int:
        return dict(self.steps).get(step, 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "raw_rows": self.raw_rows,
            "steps": [{"step": s, "removed": n} for s, n in self.steps],
            "pipeline_rows": self.pipeline_rows,
            "conflicting_texts": self.conflicting_texts,
            "class_counts": dict(self.class_counts),
        }


@dataclass(frozen=True, slots=True)
class CleanedData:
    """The filtered, de-duplicated examples before splitting."""

    examples: list[Example]
    report: DropReport
    csv_path: Path
    csv_sha256: str
    encoding: str


@dataclass(frozen=True, slots=True)
class PreparedData:
    train: list[Example]
    val: list[Example]
    test: list[Example]
    report: DropReport
    csv_path: Path
    csv_sha256: str
    raw_rows: int
    encoding: str

    @property
    def split_sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def csv_fingerprint(path: Path) -> str:
    """sha256 of the file's bytes, read in chunks (training CSVs can be gigabytes)."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise UserError(
            f"CSV file not found: {path}", hint="check the path given with --csv"
        ) from None
    except IsADirectoryError:
        raise UserError(
            f"{path} is a directory, not a CSV file", hint="pass the path of the .csv file itself"
        ) from None
    except OSError as exc:
        raise UserError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the file's permissions"
        ) from None
    return digest.hexdigest()


def clean_dataset(
    csv: Path, data: DataSettings, text: TextSettings, *, max_samples: int | None = None
) -> CleanedData:
    """Read, filter, clean and de-duplicate; no split yet."""
    from ops.csvio import canonical_labels, read_csv_strings, resolve_columns
    from stream.core.text import TextPipeline

    frame, encoding = read_csv_strings(csv)
    sha = csv_fingerprint(csv)
    cols = resolve_columns(frame, data, need_label=True)
    assert cols.label is not None  # need_label=True guarantees it
    raw_rows = len(frame)
    texts: list[str] = frame[cols.text].tolist()
    raw_labels: list[str] = frame[cols.label].tolist()
    steps: list[tuple[str, int]] = []

    present = [i for i, lab in enumerate(raw_labels) if lab.strip()]
    steps.append(("label_missing", raw_rows - len(present)))
    canonical = canonical_labels([raw_labels[i] for i in present], data.label_map)
    polar = [(i, lab) for i, lab in zip(present, canonical, strict=True) if lab != "Neutral"]
    steps.append(("neutral", len(present) - len(polar)))
    with_text = [(i, lab) for i, lab in polar if texts[i].strip()]
    steps.append(("empty_text", len(polar) - len(with_text)))

    pipeline = TextPipeline(text)
    results = pipeline.process_batch([texts[i] for i, _ in with_text])
    skipped = Counter(r.skip_reason for r in results if r.skip_reason is not None)
    for reason in (SkipReason.NON_ENGLISH, SkipReason.TOO_SHORT, SkipReason.EMPTY_AFTER_CLEANING):
        steps.append((reason.value, skipped.get(reason, 0)))
    cleaned = [
        (r.text, LABEL_IDS[lab])
        for r, (_, lab) in zip(results, with_text, strict=True)
        if r.text is not None
    ]

    labels_of: dict[str, set[int]] = {}
    copies: Counter[str] = Counter()
    for cleaned_text, label in cleaned:
        labels_of.setdefault(cleaned_text, set()).add(label)
        copies[cleaned_text] += 1
    conflicting = {t for t, labs in labels_of.items() if len(labs) > 1}
    unique = [(t, next(iter(labs))) for t, labs in labels_of.items() if t not in conflicting]
    conflict_rows = sum(copies[t] for t in conflicting)
    steps.append(("duplicate", len(cleaned) - conflict_rows - len(unique)))
    steps.append(("conflicting_labels", conflict_rows))

    if max_samples is not None:
        kept = _subsample(unique, max_samples, data)
        steps.append(("max_samples", len(unique) - len(kept)))
        unique = kept

    counts = Counter(label for _, label in unique)
    report = DropReport(
        raw_rows=raw_rows,
        steps=tuple(steps),
        pipeline_rows=len(with_text),
        conflicting_texts=len(conflicting),
        class_counts={name: counts.get(i, 0) for i, name in enumerate(LABEL_NAMES)},
    )
    return CleanedData(unique, report, Path(csv), sha, encoding)


def split_dataset(cleaned: CleanedData, data: DataSettings) -> PreparedData:
    """Deterministic stratified split; a `UserError` when it cannot be stratified."""
    report = cleaned.report
    if not cleaned.examples:
        raise UserError(
            f"nothing left to train on in {cleaned.csv_path.name}: all {report.raw_rows} rows "
            "were dropped",
            hint="run `cryptosent data summary --csv ...` to see which step dropped them",
        )
    train: list[Example] = []
    val: list[Example] = []
    test: list[Example] = []
    for label, name in enumerate(LABEL_NAMES):
        ranked = _ranked([e for e in cleaned.examples if e[1] == label], data.split_seed)
        n_test, n_val = _split_counts(len(ranked), data, name, cleaned.csv_path)
        test.extend(ranked[:n_test])
        val.extend(ranked[n_test : n_test + n_val])
        train.extend(ranked[n_test + n_val :])
    # Interleave the classes in rank order so no split is sorted by label.
    return PreparedData(
        train=_ranked(train, data.split_seed),
        val=_ranked(val, data.split_seed),
        test=_ranked(test, data.split_seed),
        report=report,
        csv_path=cleaned.csv_path,
        csv_sha256=cleaned.csv_sha256,
        raw_rows=report.raw_rows,
        encoding=cleaned.encoding,
    )


def prepare_data(
    csv: Path, data: DataSettings, text: TextSettings, *, max_samples: int | None = None
) -> PreparedData:
    """`clean_dataset` then `split_dataset`: what the trainer calls."""
    return split_dataset(clean_dataset(csv, data, text, max_samples=max_samples), data)


def _rank_key(seed: int, text: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{text}".encode("utf-8", "surrogatepass")).digest()


def _ranked(examples: Sequence[Example], seed: int) -> list[Example]:
    # Ties are impossible in practice (sha256), and texts are unique after de-duplication.
    return sorted(examples, key=lambda e: (_rank_key(seed, e[0]), e[0]))


def _split_counts(n: int, data: DataSettings, name: str, csv: Path) -> tuple[int, int]:
    n_test = max(MIN_PER_CLASS_PER_SPLIT, round(n * data.test_fraction))
    n_val = max(MIN_PER_CLASS_PER_SPLIT, round(n * data.val_fraction))
    if n == 0:
        raise UserError(
            f"no {name} rows left in {csv.name} after filtering: a sentiment model needs both "
            "Positive and Negative examples",
            hint="check --label-column / --label-map, or run `cryptosent data summary --csv ...`",
        )
    if n - n_test - n_val < MIN_PER_CLASS_PER_SPLIT:
        need = 3 * MIN_PER_CLASS_PER_SPLIT
        raise UserError(
            f"only {n} {name} rows left in {csv.name} after filtering; a stratified "
            f"train/validation/test split needs at least {need} per class, more for "
            "meaningful metrics",
            hint="add labeled rows, raise --max-samples, or see `cryptosent data summary`",
        )
    return n_test, n_val


def _subsample(examples: list[Example], max_samples: int, data: DataSettings) -> list[Example]:
    """A stratified, deterministic subsample that keeps every row in its full-data split."""
    if max_samples >= len(examples):
        return examples
    by_class = [
        _ranked([e for e in examples if e[1] == label], data.split_seed)
        for label in range(len(LABEL_NAMES))
    ]
    quotas = _largest_remainder([len(ranked) for ranked in by_class], max_samples)
    kept: list[Example] = []
    for ranked, quota in zip(by_class, quotas, strict=True):
        n = len(ranked)
        full_test = max(MIN_PER_CLASS_PER_SPLIT, round(n * data.test_fraction))
        full_val = max(MIN_PER_CLASS_PER_SPLIT, round(n * data.val_fraction))
        # The same counts `split_dataset` will compute for the subsample, so each of its splits
        # is a prefix (in rank order) of that split of the full data.
        n_test = min(full_test, max(MIN_PER_CLASS_PER_SPLIT, round(quota * data.test_fraction)))
        n_val = min(full_val, max(MIN_PER_CLASS_PER_SPLIT, round(quota * data.val_fraction)))
        n_train = max(0, quota - n_test - n_val)
        kept.extend(ranked[:n_test])
        kept.extend(ranked[full_test : full_test + n_val])
        kept.extend(ranked[full_test + full_val : full_test + full_val + n_train])
    return kept


def _largest_remainder(sizes: list[int], total: int) -> list[int]:
    """`total` shared out in proportion to `sizes`, in whole numbers that add up."""
    whole = sum(sizes)
    if whole == 0:
        return [0 for _ in sizes]
    exact = [total * size / whole for size in sizes]
    out = [int(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (out[i] - exact[i], i))
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return out
