"""Several labeled CSVs as one training set, each keeping its own test split.

A source is a CSV plus how to read it (text column, label column, label map) and a short name.
Each source is cleaned on its own (`trainer.data.clean_dataset`, Neutral dropped as always),
then duplicates are resolved across sources, then each source is split on its own with the same
rank-based stratified split. So every source has train, validation and test rows, and a cleaned
text never sits in one source's training rows and another's test rows.

Across sources, a cleaned text seen with one label is kept once, in the first source listed (the
order on the command line is the user's order of preference); a text seen with conflicting
labels is dropped from every source, as `clean_dataset` does within one.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ops.errors import UserError
from ops.settings import DataSettings, TextSettings
from trainer.data import (
    LABEL_NAMES,
    CleanedData,
    DropReport,
    Example,
    PreparedData,
    _largest_remainder,
    _subsample,
    clean_dataset,
    split_dataset,
)

__all__ = [
    "PreparedSource",
    "SourceSpec",
    "combined_fingerprint",
    "load_data_spec",
    "parse_source",
    "prepare_sources",
]

_OPTION_KEYS = {"text", "label", "map", "name"}


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One CSV and how to read it; None means "the global flag's value"."""

    path: Path
    name: str
    text_column: str | None = None
    label_column: str | None = None
    label_map: dict[str, str] | None = None

    def data_settings(self, base: DataSettings) -> DataSettings:
        update: dict[str, Any] = {}
        if self.text_column is not None:
            update["text_column"] = self.text_column
        if self.label_column is not None:
            update["label_column"] = self.label_column
        if self.label_map is not None:
            update["label_map"] = {**base.label_map, **self.label_map}
        return base.model_copy(update=update)

    def as_dict(self, base: DataSettings) -> dict[str, Any]:
        data = self.data_settings(base)
        return {
            "name": self.name,
            "csv_name": self.path.name,
            "text_column": data.text_column,
            "label_column": data.label_column,
            "label_map": dict(data.label_map),
        }


def _parse_map(value: str, where: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in value.split(";"):
        if not pair.strip():
            continue
        if "=" not in pair:
            raise UserError(
                f"label map entry {pair!r} in {where} is not raw=Canonical",
                hint="e.g. map=Bullish=Positive;Bearish=Negative",
            )
        raw, canonical = pair.split("=", 1)
        mapping[raw.strip()] = canonical.strip()
    return mapping


def parse_source(value: str) -> SourceSpec:
    """`PATH` or `PATH:key=value,...` with keys text, label, map (raw=Canonical pairs joined by
    ';') and name. A PATH that exists as a file is taken whole, colons and all."""
    path_text, options = value, ""
    if not Path(value).is_file() and ":" in value:
        head, _, tail = value.rpartition(":")
        if "=" in tail:
            path_text, options = head, tail
    spec: dict[str, Any] = {}
    for item in options.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or key not in _OPTION_KEYS:
            raise UserError(
                f"--csv option {item!r} is not one of text=, label=, map=, name=",
                hint="e.g. --csv 'tweets.csv:text=tweet,label=sentiment,map=Bullish=Positive'",
            )
        spec[key] = val.strip()
    path = Path(path_text)
    return SourceSpec(
        path=path,
        name=spec.get("name") or path.stem,
        text_column=spec.get("text"),
        label_column=spec.get("label"),
        label_map=_parse_map(spec["map"], value) if "map" in spec else None,
    )


def load_data_spec(path: Path) -> list[SourceSpec]:
    """A YAML file: `sources: [{path, name?, text?, label?, map?: {raw: Canonical}}]`; relative
    paths are relative to the file."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"data spec {path} not found") from None
    except yaml.YAMLError as exc:
        raise UserError(f"data spec {path} is not valid YAML: {exc}") from None
    entries = doc.get("sources") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"data spec {path} needs a non-empty `sources:` list")
    specs: list[SourceSpec] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "path" not in entry:
            raise UserError(f"data spec {path}: source {i + 1} needs a `path:`")
        unknown = set(entry) - (_OPTION_KEYS | {"path"})
        if unknown:
            raise UserError(f"data spec {path}: unknown keys {sorted(unknown)} in source {i + 1}")
        raw_map = entry.get("map")
        if raw_map is not None and not isinstance(raw_map, dict):
            raise UserError(f"data spec {path}: `map:` of source {i + 1} must be a mapping")
        csv = Path(str(entry["path"]))
        csv = csv if csv.is_absolute() else Path(path).parent / csv
        specs.append(
            SourceSpec(
                path=csv,
                name=str(entry.get("name") or csv.stem),
                text_column=None if entry.get("text") is None else str(entry["text"]),
                label_column=None if entry.get("label") is None else str(entry["label"]),
                label_map=None if raw_map is None else {str(k): str(v) for k, v in raw_map.items()},
            )
        )
    return specs


@dataclass(frozen=True, slots=True)
class PreparedSource:
    spec: SourceSpec
    data: PreparedData


def _with_steps(
    report: DropReport, kept: list[Example], extra: list[tuple[str, int]]
) -> DropReport:
    counts = Counter(label for _, label in kept)
    return replace(
        report,
        steps=(*report.steps, *extra),
        class_counts={name: counts.get(i, 0) for i, name in enumerate(LABEL_NAMES)},
    )


def _dedupe_across(
    cleaned: Sequence[CleanedData],
) -> list[tuple[list[Example], list[tuple[str, int]]]]:
    labels_of: dict[str, set[int]] = {}
    for c in cleaned:
        for text, label in c.examples:
            labels_of.setdefault(text, set()).add(label)
    conflicting = {t for t, labs in labels_of.items() if len(labs) > 1}
    seen: set[str] = set()
    out: list[tuple[list[Example], list[tuple[str, int]]]] = []
    for c in cleaned:
        kept: list[Example] = []
        dup = conflict = 0
        for text, label in c.examples:
            if text in conflicting:
                conflict += 1
            elif text in seen:
                dup += 1
            else:
                kept.append((text, label))
        seen.update(t for t, _ in kept)
        steps = [("duplicate_across_sources", dup), ("conflicting_across_sources", conflict)]
        out.append((kept, steps))
    return out


def prepare_sources(
    specs: Sequence[SourceSpec],
    data: DataSettings,
    text: TextSettings,
    *,
    max_samples: int | None = None,
) -> list[PreparedSource]:
    """Clean each source, resolve duplicates across them, subsample, split each on its own."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError(
            f"source names must be unique, got {names}",
            hint="give each --csv its own name=, e.g. --csv a.csv:name=a",
        )
    cleaned = [clean_dataset(s.path, s.data_settings(data), text) for s in specs]
    deduped = _dedupe_across(cleaned) if len(specs) > 1 else [(list(cleaned[0].examples), [])]
    # max_samples is shared out in proportion to each source's size after de-duplication.
    quotas = (
        _largest_remainder([len(kept) for kept, _ in deduped], max_samples)
        if max_samples is not None
        else [None] * len(specs)
    )
    out: list[PreparedSource] = []
    for spec, c, (unique, cross), quota in zip(specs, cleaned, deduped, quotas, strict=True):
        kept, steps = unique, cross
        if quota is not None:
            kept = _subsample(unique, quota, spec.data_settings(data))
            steps = [*cross, ("max_samples", len(unique) - len(kept))]
        merged = replace(c, examples=kept, report=_with_steps(c.report, kept, steps))
        out.append(PreparedSource(spec, split_dataset(merged, spec.data_settings(data))))
    return out


def combined_fingerprint(sources: Sequence[PreparedSource]) -> str:
    """One sha256 over every source's name and file hash, in order."""
    digest = hashlib.sha256()
    for s in sources:
        digest.update(f"{s.spec.name}\x00{s.data.csv_sha256}\x00".encode())
    return digest.hexdigest()
