"""Which crypto assets a post is about: cashtags, names and aliases mapped to canonical tickers.

The rules live in a versioned asset map (`stream.core.asset_map`, re-exported here);
docs/assets.md has the rules and the measured precision and recall.

Extraction reads the RAW post, not the text pipeline's output: the pipeline strips the `$` of a
cashtag and lowercases, after which `$LINK` (a ticker) and "link" (a word), `$SOL.X` and Spanish
"sol", or `$100` and "100" can no longer be told apart.

Order of the result: the primary asset first, then the others in order of first mention. The
primary asset is the one named by the first cashtag (on StockTwits and Twitter a cashtag is the
author's own tag for what the post is about), or, in a post without one, the first name mention.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stream.core.asset_map import (
    ANY,
    CONTEXT,
    PROPER,
    UPPER,
    AssetMap,
    AssetSpec,
    alias_key,
    alias_table,
    cashtag_table,
    load_asset_map,
    parse_asset_map,
)

__all__ = [
    "AssetExtractor",
    "AssetMap",
    "AssetSpec",
    "AssetSummary",
    "asset_counts",
    "asset_summary",
    "extract_assets",
    "load_asset_map",
    "parse_asset_map",
]

# The scanner reads the lowercased post (matching case-insensitively made the whole scan ~2x
# slower); the case rules of `proper` and `upper` aliases look at the original characters.
#
# Links and handles are skipped whole: a ticker inside a URL path (".../news/ETH.X/123") or a
# handle (@bitcoin) is not a mention. Bare domains count as links with a common TLD, or with a path;
# they are tried only where a dotted token starts, since trying at every dot is quadratic in the
# length of "a.a.a.a…" (measured: 1 s for a 10 kB post).
_URL = (
    r"(?:https?|ftp)://\S*"
    r"|\bwww\.\S*"
    r"|(?<![\w.-])(?:[a-z0-9-]++\.)+"
    r"(?:[a-z]{2,}/\S*|(?:com|net|org|io|xyz|gg|ly|info|finance|app|news|co|me|to)\b(?:/\S*)?)"
)
_HANDLE = r"@\w+"
# A ticker starts with a letter, so "$100", "$1,200" and "$5k" are prices, never cashtags. The `$`
# comes first and the look-behind after it: sre then tests one character at most positions.
_CASHTAG = r"\$(?<![\w$]\$)(?P<sym>[a-z][a-z0-9]{0,14})(?:\.(?P<suffix>[a-z]{1,2}))?(?![a-z0-9])"
# A word alias may follow a digit ("0.5eth") but not a letter ("meth").
_WORD_BEFORE = r"(?<![^\W\d])"


@dataclass(frozen=True, slots=True)
class AssetSummary:
    """The asset distribution of a set of posts."""

    posts: int
    counts: Counter[str]
    # Posts naming 0, 1, and 2 or more assets.
    by_number: tuple[int, int, int]
    map_version: str

    def share(self, n: int) -> float:
        return self.by_number[min(n, 2)] / self.posts if self.posts else 0.0


_MEMO_MAX = 4096


@dataclass(frozen=True, slots=True)
class _Tables:
    cashtags: dict[str, AssetSpec]
    aliases: dict[str, tuple[str, int]]
    scanner: re.Pattern[str]
    pair: re.Pattern[str]

    @classmethod
    def build(cls, asset_map: AssetMap) -> _Tables:
        aliases = alias_table(asset_map)
        wordy = [a for a in aliases if a[0].isalnum() and a[-1].isalnum()]
        symbolic = [a for a in aliases if not (a[0].isalnum() and a[-1].isalnum())]
        parts = [
            rf"(?P<url>{_URL})",
            rf"(?P<handle>{_HANDLE})",
            rf"(?P<cash>{_CASHTAG})",
        ]
        if wordy:
            parts.append(rf"{_WORD_BEFORE}(?P<word>{_trie_pattern(wordy)})(?!\w)")
        if symbolic:
            parts.append(rf"(?P<symbol>{_trie_pattern(symbolic)})")
        quotes = "|".join(map(re.escape, asset_map.pair_quotes)) or "(?!)"
        return cls(
            cashtags=cashtag_table(asset_map),
            aliases=aliases,
            scanner=re.compile("|".join(parts)),
            pair=re.compile(rf"([A-Z]{{2,10}}?)(?:{quotes})"),
        )


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex for many words, factored by common prefix ("b(?:itcoin(?:\\s+cash)?|tc)").

    Python's `re` tries the branches of a plain alternation one by one at every position, which
    for a few hundred aliases made extraction ~170 µs a post; a prefix tree costs a few character
    comparisons per position instead. Each optional tail is greedy, so at any position the
    longest alias wins ("bitcoin cash" over "bitcoin", "into the ether" over nothing).
    """
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        branches = [
            (r"\s+" if char == " " else re.escape(char)) + emit(child)
            for char, child in sorted(node.items())
            if char
        ]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:
            return body + "?" if len(branches) > 1 else f"(?:{body})?"
        return body

    return emit(trie)


def _normalize(text: str) -> str:
    # Scraped posts carry HTML entities ("&#36;ETH" is "$ETH", sometimes escaped twice), and
    # spam spells names in full-width or "mathematical bold" look-alikes that NFKC makes plain.
    for _ in range(2):
        if "&" not in text:
            break
        text = html.unescape(text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return text


def _lower(text: str) -> str:
    """`text.lower()` with every index unchanged, so a match in it is a slice of `text`."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    # A few characters lowercase to two ("İ" -> "i̇"); they are never part of an alias.
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


class AssetExtractor:
    """Extraction with one asset map, its tables built once (the serve path calls this per post)."""

    def __init__(self, asset_map: AssetMap) -> None:
        self.asset_map = asset_map
        self._t = _Tables.build(asset_map)
        self._cashtag_memo: dict[str, tuple[str, bool] | None] = {}

    @property
    def version(self) -> str:
        return self.asset_map.version

    def _pair_base(self, symbol: str) -> AssetSpec | None:
        m = self._t.pair.fullmatch(symbol.upper())
        return None if m is None else self._t.cashtags.get(m.group(1))

    def _resolve_cashtag(self, symbol: str, suffix: str | None) -> tuple[str, bool] | None:
        """(ticker, gated) for a lowercased cashtag; gated: counts only with crypto context."""
        spec = self._t.cashtags.get(symbol.upper())
        is_pair = spec is None
        if spec is None and (spec := self._pair_base(symbol)) is None:
            return None
        crypto = suffix is not None and suffix.upper() in self.asset_map.crypto_suffixes
        return spec.ticker, spec.stock and not crypto and not is_pair

    def extract(self, text: str) -> list[str]:
        """Canonical tickers named in `text`, primary first (see the module docstring)."""
        if not text:
            return []
        text = _normalize(text)
        aliases, memo = self._t.aliases, self._cashtag_memo
        hits: list[tuple[str, bool]] = []  # (ticker, from a cashtag) in text order
        gated: list[int] = []  # indexes into hits of stock-colliding bare cashtags
        context = False
        for m in self._t.scanner.finditer(_lower(text)):
            kind = m.lastgroup
            if kind == "cash":
                tag = m.group()
                if tag in memo:
                    found = memo[tag]
                else:
                    found = self._resolve_cashtag(m.group("sym"), m.group("suffix"))
                    # Bounded: a stream of made-up cashtags must not grow it forever.
                    if len(memo) < _MEMO_MAX:
                        memo[tag] = found
                if found is None:
                    continue
                if found[1]:
                    gated.append(len(hits))
                else:
                    context = True
                hits.append((found[0], True))
            elif kind in ("word", "symbol"):
                alias = m.group()
                ticker, rule = aliases.get(alias) or aliases[alias_key(alias)]
                if ticker == CONTEXT:
                    context = True
                elif ticker and (
                    rule == ANY
                    or (rule == PROPER and not text[m.start() : m.end()].islower())
                    or (rule == UPPER and text[m.start() : m.end()].isupper())
                ):
                    context = True
                    hits.append((ticker, False))
        if gated and not context:
            dropped = set(gated)
            hits = [h for i, h in enumerate(hits) if i not in dropped]
        return _ordered(hits)

    def summary(self, texts: Iterable[str]) -> AssetSummary:
        counts: Counter[str] = Counter()
        by_number = [0, 0, 0]
        posts = 0
        for text in texts:
            found = self.extract(text)
            counts.update(found)
            by_number[min(len(found), 2)] += 1
            posts += 1
        return AssetSummary(posts, counts, (by_number[0], by_number[1], by_number[2]), self.version)


def _ordered(hits: Sequence[tuple[str, bool]]) -> list[str]:
    if not hits:
        return []
    primary = next((ticker for ticker, cashtag in hits if cashtag), hits[0][0])
    out = [primary]
    for ticker, _ in hits:
        if ticker not in out:
            out.append(ticker)
    return out


# By identity: hashing a map (88 nested specs) cost as much as an extraction. Each entry holds its
# map, so an id is never reused while cached.
_EXTRACTORS: dict[int, tuple[AssetMap, AssetExtractor]] = {}


def _extractor(asset_map: AssetMap) -> AssetExtractor:
    entry = _EXTRACTORS.get(id(asset_map))
    if entry is None or entry[0] is not asset_map:
        if len(_EXTRACTORS) >= 8:
            _EXTRACTORS.clear()
        entry = _EXTRACTORS[id(asset_map)] = (asset_map, AssetExtractor(asset_map))
    return entry[1]


def extract_assets(text: str, asset_map: AssetMap) -> list[str]:
    """`AssetExtractor(asset_map).extract(text)`, with the extractor cached per map."""
    return _extractor(asset_map).extract(text)


def asset_counts(texts: Iterable[str], asset_map: AssetMap) -> Counter[str]:
    """Per ticker, the number of posts that name it."""
    return _extractor(asset_map).summary(texts).counts


def asset_summary(texts: Iterable[str], asset_map: AssetMap) -> AssetSummary:
    return _extractor(asset_map).summary(texts)
