"""The asset map: which strings in a post name which crypto asset, versioned.

The data is `assets_map.toml` in this package, or a user's file in the same format; the format
and the rules are in docs/assets.md. `stream.core.assets` scans posts with it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ops.errors import UserError

__all__ = [
    "ANY",
    "BUILTIN_MAP",
    "CONTEXT",
    "NOT_ASSET",
    "PROPER",
    "UPPER",
    "AssetMap",
    "AssetSpec",
    "alias_key",
    "alias_table",
    "cashtag_table",
    "load_asset_map",
    "parse_asset_map",
]

BUILTIN_MAP = "assets_map.toml"
HINT = "see docs/assets.md for the asset map format"
_TICKER = re.compile(r"[A-Z][A-Z0-9]{0,14}")

# How an alias must be written to count: in any case, not all lowercase, or all capitals.
ANY, PROPER, UPPER = 0, 1, 2
# Alias-table values that name no asset: a `not_assets` phrase, and a crypto context word.
NOT_ASSET = ""
CONTEXT = "\x00context"


@dataclass(frozen=True, slots=True)
class AssetSpec:
    ticker: str
    cashtags: tuple[str, ...]
    words: tuple[str, ...] = ()
    proper: tuple[str, ...] = ()
    upper: tuple[str, ...] = ()
    stock: bool = False


@dataclass(frozen=True, slots=True)
class AssetMap:
    version: str
    assets: tuple[AssetSpec, ...]
    crypto_suffixes: frozenset[str] = frozenset({"X"})
    pair_quotes: tuple[str, ...] = ()
    context_words: tuple[str, ...] = ()
    not_assets: tuple[str, ...] = ()
    source: str = field(default=BUILTIN_MAP, compare=False)

    @property
    def tickers(self) -> frozenset[str]:
        return frozenset(spec.ticker for spec in self.assets)


def load_asset_map(path: Path | None = None) -> AssetMap:
    """The asset map at `path`, or the one shipped with the package when `path` is None."""
    if path is None:
        raw = resources.files("stream.core").joinpath(BUILTIN_MAP).read_bytes()
        source = BUILTIN_MAP
    else:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read asset map {path}: {exc.strerror}", hint=HINT) from None
        source = str(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"asset map {source} is not valid TOML: {exc}", hint=HINT) from None
    return parse_asset_map(data, source=source)


def _strings(value: Any, where: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise UserError(
            f"asset map {source}: {where} must be a list of non-empty strings", hint=HINT
        )
    return tuple(" ".join(v.split()) for v in value)


def parse_asset_map(data: Mapping[str, Any], source: str = "<data>") -> AssetMap:
    """Validate a decoded map; every problem is a `UserError` naming the offending entry."""
    version = data.get("version")
    if not isinstance(version, str | int) or isinstance(version, bool) or not str(version).strip():
        raise UserError(f"asset map {source}: `version` (a string) is required", hint=HINT)
    table = data.get("assets")
    if not isinstance(table, dict) or not table:
        raise UserError(f"asset map {source}: `[assets.TICKER]` tables are required", hint=HINT)
    specs: list[AssetSpec] = []
    for ticker, entry in table.items():
        if not _TICKER.fullmatch(ticker):
            raise UserError(f"asset map {source}: ticker {ticker!r} is not A-Z0-9", hint=HINT)
        if not isinstance(entry, dict):
            raise UserError(f"asset map {source}: assets.{ticker} must be a table", hint=HINT)
        unknown = set(entry) - {"cashtags", "words", "proper", "upper", "stock"}
        if unknown:
            raise UserError(
                f"asset map {source}: assets.{ticker} has unknown keys {sorted(unknown)}",
                hint=HINT,
            )
        stock = entry.get("stock", False)
        if not isinstance(stock, bool):
            raise UserError(
                f"asset map {source}: assets.{ticker}.stock must be true or false", hint=HINT
            )
        extra = _strings(entry.get("cashtags", []), f"assets.{ticker}.cashtags", source)
        specs.append(
            AssetSpec(
                ticker=ticker,
                cashtags=(ticker, *(c.upper() for c in extra)),
                words=_strings(entry.get("words", []), f"assets.{ticker}.words", source),
                proper=_strings(entry.get("proper", []), f"assets.{ticker}.proper", source),
                upper=_strings(entry.get("upper", []), f"assets.{ticker}.upper", source),
                stock=stock,
            )
        )
    asset_map = AssetMap(
        version=str(version).strip(),
        assets=tuple(specs),
        crypto_suffixes=frozenset(
            s.upper()
            for s in _strings(data.get("crypto_suffixes", ["X"]), "crypto_suffixes", source)
        ),
        pair_quotes=tuple(
            q.upper() for q in _strings(data.get("pair_quotes", []), "pair_quotes", source)
        ),
        context_words=_strings(data.get("context_words", []), "context_words", source),
        not_assets=_strings(data.get("not_assets", []), "not_assets", source),
        source=source,
    )
    # Conflicts are reported when the map is loaded, not on the first post.
    cashtag_table(asset_map)
    alias_table(asset_map)
    return asset_map


def alias_key(text: str) -> str:
    return " ".join(text.lower().split())


def cashtag_table(asset_map: AssetMap) -> dict[str, AssetSpec]:
    """Upper-case cashtag symbol -> its asset."""
    table: dict[str, AssetSpec] = {}
    for spec in asset_map.assets:
        for tag in spec.cashtags:
            if tag in table and table[tag].ticker != spec.ticker:
                raise UserError(
                    f"asset map {asset_map.source}: cashtag ${tag} names both "
                    f"{table[tag].ticker} and {spec.ticker}",
                    hint=HINT,
                )
            table[tag] = spec
    return table


def alias_table(asset_map: AssetMap) -> dict[str, tuple[str, int]]:
    """`alias_key(alias)` -> (ticker, or NOT_ASSET / CONTEXT; ANY / PROPER / UPPER)."""
    table: dict[str, tuple[str, int]] = {}

    def add(alias: str, value: tuple[str, int], owner: str) -> None:
        key = alias_key(alias)
        seen = table.get(key)
        if seen is not None and seen[0] != value[0]:
            raise UserError(
                f"asset map {asset_map.source}: {alias!r} ({owner}) is also an alias of "
                f"{seen[0] or 'not_assets'}",
                hint=HINT,
            )
        table[key] = value

    for spec in asset_map.assets:
        for names, rule in ((spec.words, ANY), (spec.proper, PROPER), (spec.upper, UPPER)):
            for name in names:
                add(name, (spec.ticker, rule), f"assets.{spec.ticker}")
    for phrase in asset_map.not_assets:
        add(phrase, (NOT_ASSET, ANY), "not_assets")
    for word in asset_map.context_words:
        table.setdefault(alias_key(word), (CONTEXT, ANY))
    # A trading pair glued together ("ETHUSD", "btcusdt") names its base asset.
    for spec in asset_map.assets:
        for tag in spec.cashtags:
            for quote in asset_map.pair_quotes:
                table.setdefault(f"{tag}{quote}".lower(), (spec.ticker, ANY))
    return table
