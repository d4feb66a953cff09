"""The one text pipeline: the trainer cleans its training data with it and the stream cleans every
incoming tweet with it, configured by the `TextConfig` saved in the model artifact.

`clean` is a single pass whose step order makes it idempotent (`clean(clean(x)) == clean(x)`):
every step either removes characters that later steps never reintroduce or inserts only word
characters and spaces, and the symbol removal that strips the markers (`#`, `$`, `@`, `://`)
runs last, so a second pass finds nothing left to match.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ops.errors import UserError
from schemas.messages import SkipReason
from schemas.text import TextConfig
from stream.core.lru import BoundedCache

if TYPE_CHECKING:
    from stream.core.lang import LanguageFilter

__all__ = ["CleanResult", "TextPipeline"]

# Entries in each pipeline's cache of raw text -> result (a few MB at tweet sizes).
CACHE_SIZE = 8192

# Lone surrogates (valid in a JSON string, invalid in UTF-8) and control characters other than
# whitespace would make the cleaned text unencodable or invisible-but-different, whatever
# `symbol_pattern` a user configured, so they always go.
_UNSAFE = re.compile(r"[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f]")

# Top-level domains common enough in tweets to recognise a bare `example.com` without a path.
_STRONG_TLDS = (
    "com|net|org|io|xyz|gg|ly|info|finance|app|biz|dev|online|site|news|network|exchange|"
    "money|cash|market|link|page|club|top|live|world|tech|crypto|eth|nft"
)
# TLDs that are also short words or abbreviations ("it.so", "e.g.in"): treated as a link only
# with a path, which covers `t.co/abc` and `bit.ly`-style shorteners.
_WEAK_TLDS = (
    "co|me|to|in|it|us|so|de|es|fr|tv|ai|uk|ru|jp|cn|kr|br|eu|ca|au|nl|ch|se|fi|im|sh|tk|be|at"
)
_URL = re.compile(
    r"(?:https?|ftp)://\S*"
    r"|\bwww\.\S*"
    rf"|\b(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+(?:{_STRONG_TLDS})\b(?:/\S*)?"
    rf"|\b(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+(?:{_WEAK_TLDS})/\S*",
    re.IGNORECASE,
)
_TLD_HINT = re.compile(rf"\.(?:{_STRONG_TLDS}|{_WEAK_TLDS})", re.IGNORECASE)
# Unconditional: a handle glued to a word ("thanks@bob") is still a handle, never sentiment.
_MENTION = re.compile(r"@\w+")
_HASHTAG = re.compile(r"#(\w+)")
# A ticker starts with a letter, so "$1,200" and "$5k" are prices, not cashtags. StockTwits marks
# crypto with a ".X" suffix ("$ETH.X"); other venues use similar one- or two-letter suffixes.
_CASHTAG = re.compile(
    r"\$([A-Za-z][A-Za-z0-9]{0,14})(?:\.[A-Za-z]{1,2}(?![A-Za-z0-9]))?(?![A-Za-z0-9])"
)
_APOSTROPHES = "'\u2019\u02bc\u2018"
_ANY_CONTRACTION = re.compile(rf"(?<=\w)[{_APOSTROPHES}](?=\w)")
_LINE_BREAKS = re.compile(r"\r\n?")
_HAS_DIGIT = re.compile(r"\d")
_NON_WORD = re.compile(r"[^\w\s]|_")


def _may_hold_url(text: str) -> bool:
    # A necessary condition for each alternative of _URL, ~10x cheaper to test than _URL itself,
    # which backtracks at every word boundary (StockTwits' "$ETH.X" puts a dot in most posts).
    return "://" in text or "www." in text.lower() or _TLD_HINT.search(text) is not None


def _collapse(text: str) -> str:
    # str.split() and `\s` share one definition of whitespace (str.isspace), so this collapses
    # exactly what the symbol pattern spares as whitespace.
    return " ".join(text.split())


def _unescape(text: str) -> str:
    # Double-escaped entities ("&amp;#39;") are common in scraped tweets; each round that changes
    # anything shortens the text, so the loop ends.
    while "&" in text:
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    return text


def _emoji_words(chars: str, data: dict[str, str]) -> str:
    del chars
    name = data.get("en", "").strip(":").replace("_", " ")
    return f" {name} "


def _emoji_space(chars: str, data: dict[str, str]) -> str:
    del chars, data
    return " "


@dataclass(frozen=True, slots=True)
class CleanResult:
    text: str | None
    skip_reason: SkipReason | None
    language: str | None

    @property
    def kept(self) -> bool:
        return self.skip_reason is None


@dataclass(frozen=True, slots=True)
class _Cleaned:
    text: str
    # What the language filter looks at: the cleaned words minus everything language-neutral
    # (tickers, hashtags, emoji names, numbers) that would otherwise pull every text towards
    # English ("rocket", "ETH") or towards noise.
    lang_view: str


class TextPipeline:
    """Cleaning, the minimum-length rule and the English filter, as one configured object."""

    def __init__(self, config: TextConfig) -> None:
        self._config = config
        try:
            self._symbols = re.compile(config.symbol_pattern)
        except re.error as exc:
            raise UserError(
                f"text.symbol_pattern is not a valid regular expression: {exc}",
                hint="fix CRYPTOSENT_TEXT__SYMBOL_PATTERN or the artifact's text settings",
            ) from None
        if self._symbols.fullmatch("") is not None:
            raise UserError(
                f"text.symbol_pattern {config.symbol_pattern!r} matches the empty string",
                hint="use a pattern that matches at least one character, e.g. [^\\w\\s]",
            )
        # Contractions lose their apostrophe without a gap ("don't" -> "dont", "Bitcoin's" ->
        # "Bitcoins") instead of splitting into a stray letter, but only for the apostrophes
        # the symbol pattern would remove anyway.
        removed = "".join(a for a in _APOSTROPHES if self._symbols.fullmatch(a))
        self._removed_apostrophes = tuple(removed)
        self._contraction: re.Pattern[str] | None = (
            re.compile(rf"(?<=\w)[{re.escape(removed)}](?=\w)") if removed else None
        )
        protect: list[str] = []
        if config.hashtags == "keep":
            protect.append(_HASHTAG.pattern)
        if config.cashtags == "keep":
            protect.append(_CASHTAG.pattern)
        self._protect = re.compile("|".join(protect)) if protect else None
        self._lang: LanguageFilter | None = None
        # Retweets and bot posts repeat texts verbatim; the pipeline is deterministic, so a
        # bounded cache of raw text -> result is exact.
        self._cache: BoundedCache[str, CleanResult] = BoundedCache(CACHE_SIZE)

    @property
    def config(self) -> TextConfig:
        return self._config

    # -- cleaning -------------------------------------------------------------------------------

    def clean(self, raw: str) -> str:
        return self._clean(raw, want_lang_view=False).text

    def _clean(self, raw: str, *, want_lang_view: bool) -> _Cleaned:
        cfg = self._config
        # Every character _UNSAFE matches is unprintable; most tweets are printable throughout.
        text = raw if raw.isprintable() else _UNSAFE.sub(" ", raw)
        if cfg.unescape_html and "&" in text:
            unescaped = _unescape(text)
            if unescaped != text:
                text = unescaped if unescaped.isprintable() else _UNSAFE.sub(" ", unescaped)
        # NFKC first so that full-width and "mathematical bold" look-alikes (common in spam and
        # shill tweets) are plain letters for every later pattern and for the tokenizer.
        # The `in` checks below skip a pattern that cannot match (each needs that character);
        # they are exact and several times cheaper than a regex scan. ASCII is already NFKC.
        if cfg.unicode_normalization != "none" and not text.isascii():
            text = unicodedata.normalize(cfg.unicode_normalization, text)
        if "\r" in text:
            text = _LINE_BREAKS.sub("\n", text)
        text = _collapse(text)
        # Links before mentions: a URL may contain "@" (medium.com/@user/post).
        if cfg.remove_urls and _may_hold_url(text):
            text = _URL.sub(" ", text)
        if cfg.remove_mentions and "@" in text:
            text = _MENTION.sub(" ", text)
        lang_view = self._lang_view(text) if want_lang_view else ""

        if "#" in text:
            if cfg.hashtags == "strip_symbol":
                text = _HASHTAG.sub(r" \1", text)
            elif cfg.hashtags == "remove":
                text = _HASHTAG.sub(" ", text)
        if "$" in text:
            if cfg.cashtags == "ticker":
                text = _CASHTAG.sub(r" \1 ", text)
            elif cfg.cashtags == "remove":
                text = _CASHTAG.sub(" ", text)
        if cfg.emojis != "keep":
            text = _replace_emoji(text, _emoji_words if cfg.emojis == "demojize" else _emoji_space)
        if cfg.lowercase:
            # Before the symbol removal: lowercasing can emit combining marks ("İ" -> "i̇")
            # that the symbol pattern then removes, so a second pass finds nothing to change.
            text = text.lower()
        text = self._remove_symbols(text)
        if cfg.unicode_normalization != "none" and not text.isascii():
            # Removing an apostrophe can join two Hangul jamo into a composable pair.
            text = unicodedata.normalize(cfg.unicode_normalization, text)
        return _Cleaned(_collapse(text), lang_view)

    def _remove_symbols(self, text: str) -> str:
        if self._contraction is not None and any(a in text for a in self._removed_apostrophes):
            text = self._contraction.sub("", text)
        spans = self._protected_spans(text)
        if not spans:
            return self._symbols.sub(" ", text)
        parts: list[str] = []
        pos = 0
        for start, end in spans:
            parts.append(self._symbols.sub(" ", text[pos:start]))
            # Spaces around a kept token so that removing its neighbours cannot glue it to a
            # word and change how the next pass reads it.
            parts.append(f" {text[start:end]} ")
            pos = end
        parts.append(self._symbols.sub(" ", text[pos:]))
        return "".join(parts)

    def _protected_spans(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        if self._protect is not None:
            spans.extend(m.span() for m in self._protect.finditer(text))
        if self._config.emojis == "keep":
            spans.extend(_emoji_spans(text))
        if not spans:
            return spans
        spans.sort()
        merged: list[tuple[int, int]] = [spans[0]]
        for start, end in spans[1:]:
            last_start, last_end = merged[-1]
            if start < last_end:
                merged[-1] = (last_start, max(last_end, end))
            else:
                merged.append((start, end))
        return merged

    @staticmethod
    def _lang_view(text: str) -> str:
        if _may_hold_url(text):
            text = _URL.sub(" ", text)
        if "@" in text:
            text = _MENTION.sub(" ", text)
        if not text.isascii() or "'" in text:
            text = _ANY_CONTRACTION.sub("", text)
        if "#" in text:
            text = _HASHTAG.sub(" ", text)
        if "$" in text:
            text = _CASHTAG.sub(" ", text)
        # Emojis are symbols (So/Sk/Cf/Mn), never word characters, so the symbol pass drops them.
        words = _NON_WORD.sub(" ", text).split()
        return " ".join(w for w in words if not _HAS_DIGIT.search(w))

    # -- filtering ------------------------------------------------------------------------------

    def language_filter(self) -> LanguageFilter:
        """Built on first use: loading a language model is not import-time work."""
        if self._lang is None:
            from stream.core.lang import LanguageFilter

            self._lang = LanguageFilter(self._config)
        return self._lang

    def process(self, raw: str) -> CleanResult:
        return self.process_batch([raw])[0]

    def process_batch(self, raws: Sequence[str]) -> list[CleanResult]:
        known: dict[str, CleanResult] = {}
        missing = []
        for raw in dict.fromkeys(raws):
            cached = self._cache.get(raw)
            if cached is None:
                missing.append(raw)
            else:
                known[raw] = cached
        for raw, result in zip(missing, self._process_many(missing), strict=True):
            known[raw] = result
            self._cache.put(raw, result)
        return [known[raw] for raw in raws]

    def _process_many(self, raws: list[str]) -> list[CleanResult]:
        # Cleaning is per text; the English filter ranks the batch's views together.
        want_lang = self._config.lang_backend != "none"
        results: list[CleanResult | None] = []
        judged: list[tuple[int, str, str]] = []
        for raw in raws:
            item = self._clean(raw, want_lang_view=want_lang)
            if not item.text:
                results.append(CleanResult(None, SkipReason.EMPTY_AFTER_CLEANING, None))
            elif len(item.text) < self._config.min_chars:
                results.append(CleanResult(None, SkipReason.TOO_SHORT, None))
            elif not want_lang:
                results.append(CleanResult(item.text, None, None))
            else:
                judged.append((len(results), item.text, item.lang_view))
                results.append(None)
        if judged:
            verdicts = self.language_filter().judge_batch([view for _, _, view in judged])
            for (at, text, _), verdict in zip(judged, verdicts, strict=True):
                if verdict.english:
                    results[at] = CleanResult(text, None, verdict.language)
                else:
                    results[at] = CleanResult(None, SkipReason.NON_ENGLISH, verdict.language)
        return [r for r in results if r is not None]


@functools.cache
def _emoji_chars() -> frozenset[str]:
    """Every non-ASCII character of any emoji sequence: a text with none of them holds no emoji
    (no emoji is pure ASCII), so the per-character emoji tokenizer can be skipped exactly. A set,
    not a regex: a character class of 1,400 astral characters scans ~100x slower."""
    import emoji

    return frozenset(c for key in emoji.EMOJI_DATA for c in key if not c.isascii())


def _may_hold_emoji(text: str) -> bool:
    return not text.isascii() and not _emoji_chars().isdisjoint(text)


def _replace_emoji(text: str, replace: Callable[[str, dict[str, str]], str]) -> str:
    if not _may_hold_emoji(text):
        # Every emoji is outside ASCII; the emoji tokenizer walks the text one character at a
        # time in Python, the slowest step of the pipeline by far.
        return text
    import emoji

    result: str = emoji.replace_emoji(text, replace=replace)
    return result


def _emoji_spans(text: str) -> list[tuple[int, int]]:
    if not _may_hold_emoji(text):
        return []
    import emoji

    return [(e["match_start"], e["match_end"]) for e in emoji.emoji_list(text)]
