"""Reading labeled tweet CSVs robustly: shared by the trainer and the stream's `replay`.

Every column is read as a string: real exports mix types within a column (ids that are numbers
in one row and text in the next, "N/A" in a numeric field), which the notebook tripped over.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from ops.errors import UserError
from ops.settings import DataSettings

__all__ = [
    "CANONICAL_LABELS",
    "CanonicalLabel",
    "Columns",
    "canonical_label",
    "canonical_labels",
    "read_csv_strings",
    "resolve_columns",
]

CanonicalLabel = Literal["Positive", "Negative", "Neutral"]
CANONICAL_LABELS: tuple[CanonicalLabel, ...] = ("Positive", "Negative", "Neutral")
_BY_LOWER: dict[str, CanonicalLabel] = {label.lower(): label for label in CANONICAL_LABELS}
_BOM = b"\xef\xbb\xbf"
_SNIFF_BYTES = 8192
_COMPRESSED = frozenset({".gz", ".bz2", ".zip", ".xz", ".zst", ".tar"})


def read_csv_strings(path: Path) -> tuple[pd.DataFrame, str]:
    """The CSV with every column as `str` (empty cells are ""), and the encoding that read it.

    Encodings tried in order: UTF-8 with a byte-order mark when the file starts with one, else
    UTF-8, then cp1252 (Excel on Windows). A UTF-8 BOM never ends up in the first column name.
    `.gz`/`.zip`/... files are decompressed by extension.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"CSV file not found: {path}", hint="check the path given with --csv")
    if path.is_dir():
        raise UserError(
            f"{path} is a directory, not a CSV file", hint="pass the path of the .csv file itself"
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise UserError(
            f"cannot read {path}: {exc.strerror or exc}",
            hint="check the file's permissions, or copy it somewhere readable",
        ) from None
    if not head:
        raise UserError(f"{path} is empty", hint="pass a CSV with a header row and labeled rows")
    if path.suffix.lower() in _COMPRESSED:
        # pandas decompresses by extension; the sniffing below would only see compressed bytes.
        # utf-8-sig reads UTF-8 with or without a BOM.
        return _read(path, ["utf-8-sig", "cp1252"])
    if b"\x00" in head:
        # Text CSVs never contain NUL; spreadsheets, archives and UTF-16 "Unicode text" do.
        raise UserError(
            f"{path} looks like a binary file (spreadsheet, archive or UTF-16 text), not a CSV",
            hint="export it as CSV UTF-8 (comma delimited)",
        )
    return _read(path, ["utf-8-sig"] if head.startswith(_BOM) else ["utf-8", "cp1252"])


def _read(path: Path, encodings: list[str]) -> tuple[pd.DataFrame, str]:
    last_error: UnicodeDecodeError | None = None
    for encoding in encodings:
        try:
            frame = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                encoding=encoding,
                encoding_errors="strict",
            )
        except UnicodeDecodeError as exc:
            last_error = exc
            continue
        except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error, ValueError) as exc:
            detail = " ".join(str(exc).split())
            raise UserError(
                f"{path} is not a readable CSV file: {detail}",
                hint="export it as comma-separated values with one header row",
            ) from None
        except OSError as exc:
            raise UserError(
                f"cannot read {path}: {exc.strerror or exc}",
                hint="check the file's permissions, or copy it somewhere readable",
            ) from None
        frame.columns = pd.Index([_clean_column_name(str(c)) for c in frame.columns])
        # Short rows leave NaN in the missing trailing cells even with keep_default_na=False.
        frame = frame.fillna("")
        return frame, encoding
    reason = f" ({last_error.reason})" if last_error is not None else ""
    raise UserError(
        f"{path} is neither UTF-8 nor cp1252 text{reason}; is it really a CSV file?",
        hint="re-save it as UTF-8 CSV",
    )


def _clean_column_name(name: str) -> str:
    # A BOM can survive inside the header when a file was concatenated or converted twice.
    return name.lstrip("\ufeff")


@dataclass(frozen=True, slots=True)
class Columns:
    """The CSV's column names for each field of the Kaggle shape."""

    text: str
    label: str | None
    id: str | None
    created_at: str | None


def resolve_columns(frame: pd.DataFrame, data: DataSettings, *, need_label: bool) -> Columns:
    """Check the mapped columns exist; a missing one is a `UserError` naming the flag to fix it."""
    available = [str(c) for c in frame.columns]

    def need(column: str, flag: str, what: str) -> str:
        if column in available:
            return column
        # A near miss ("Text", " text") is the common case: say which one was meant.
        near = [c for c in available if c.strip().lower() == column.strip().lower()]
        suggestion = f" (did you mean {near[0]!r}?)" if near else ""
        raise UserError(
            f"no {what} column {column!r} in the CSV{suggestion}; columns: {_listing(available)}",
            hint=f"name the {what} column with {flag}",
        )

    text = need(data.text_column, "--text-column", "text")
    label = need(data.label_column, "--label-column", "label") if need_label else None
    if not need_label and data.label_column in available:
        label = data.label_column
    ident = need(data.id_column, "--id-column", "id") if data.id_column else None
    created = (
        need(data.created_at_column, "--created-at-column", "created_at")
        if data.created_at_column
        else None
    )
    return Columns(text=text, label=label, id=ident, created_at=created)


def _validated_map(label_map: Mapping[str, str]) -> dict[str, CanonicalLabel]:
    out: dict[str, CanonicalLabel] = {}
    for raw, target in label_map.items():
        canonical = _BY_LOWER.get(target.strip().lower())
        if canonical is None:
            raise UserError(
                f"--label-map maps {raw!r} to {target!r}, which is not Positive, Negative or "
                "Neutral",
                hint="write pairs like 'Bullish=Positive,Bearish=Negative'",
            )
        out[raw.strip()] = canonical
    return out


def _lookup(raw: str, mapping: Mapping[str, CanonicalLabel]) -> CanonicalLabel | None:
    value = raw.strip()
    if value in mapping:
        return mapping[value]
    folded = value.lower()
    for key, target in mapping.items():
        if key.lower() == folded:
            return target
    return _BY_LOWER.get(folded)


def canonical_label(raw: str, label_map: Mapping[str, str]) -> CanonicalLabel:
    """`Positive`/`Negative`/`Neutral` for a raw label value.

    The canonical names are accepted in any case. Anything else ("Bullish", "1", "pos") must come
    through `label_map`: guessing what a dataset's labels mean is how sentiment gets inverted.
    """
    return canonical_labels([raw], label_map)[0]


def canonical_labels(raws: Iterable[str], label_map: Mapping[str, str]) -> list[CanonicalLabel]:
    """`canonical_label` for a whole column; every unknown value is listed in one error."""
    mapping = _validated_map(label_map)
    cache: dict[str, CanonicalLabel | None] = {}
    out: list[CanonicalLabel] = []
    unknown: dict[str, int] = {}
    for raw in raws:
        if raw not in cache:
            cache[raw] = _lookup(raw, mapping)
        found = cache[raw]
        if found is None:
            unknown[raw] = unknown.get(raw, 0) + 1
        else:
            out.append(found)
    if unknown:
        shown = ", ".join(f"{v!r} ({n})" for v, n in sorted(unknown.items(), key=_by_count)[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise UserError(
            f"unknown label values {shown}{more}; expected Positive, Negative or Neutral",
            hint="map them with --label-map, e.g. --label-map 'Bullish=Positive,Bearish=Negative'",
        )
    return out


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


def _listing(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
