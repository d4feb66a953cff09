"""The one text pipeline: each cleaning step, the notebook's bug, and properties over any text."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.errors import UserError
from ops.settings import TextSettings
from schemas.messages import SkipReason
from stream.core.text import CleanResult, TextPipeline

PLAIN = TextSettings(lang_backend="none")


@pytest.fixture(scope="module")
def pipe() -> TextPipeline:
    return TextPipeline(PLAIN)


def clean(raw: str, **overrides: object) -> str:
    return TextPipeline(PLAIN.model_copy(update=overrides)).clean(raw)


# -- each step ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Tom &amp; Jerry", "Tom Jerry"),
        ("it&#39;s pumping", "its pumping"),
        ("it&amp;#39;s pumping", "its pumping"),  # double-escaped, as StockTwits serves it
        ("&quot;HODL&quot; &gt; sell", "HODL sell"),
        ("a &amp;amp;amp; b", "a b"),
    ],
)
def test_html_entities_are_unescaped(pipe: TextPipeline, raw: str, expected: str) -> None:
    assert pipe.clean(raw) == expected


def test_unescape_can_be_turned_off() -> None:
    assert clean("it&#39;s", unescape_html=False) == "it 39 s"


def test_line_breaks_and_whitespace_collapse(pipe: TextPipeline) -> None:
    assert pipe.clean("  buy\r\nthe\rdip\n\n\tnow  ") == "buy the dip now"
    assert pipe.clean("a\u00a0b\u2028c") == "a b c"


@pytest.mark.parametrize(
    "raw",
    [
        "@Elon_Musk pump it",
        "pump it @Elon_Musk",
        "pump @a @b_c it",
    ],
)
def test_mentions_are_removed(pipe: TextPipeline, raw: str) -> None:
    assert pipe.clean(raw) == "pump it"


def test_mentions_can_be_kept() -> None:
    assert clean("@bob hi there", remove_mentions=False) == "bob hi there"


@pytest.mark.parametrize(
    "raw",
    [
        "moon https://t.co/bd0xbFGjkT soon",
        "moon http://example.com/a?b=c&d=e soon",
        "moon www.coindesk.com/markets soon",
        "moon t.co/abc123 soon",
        "moon twitter.com/theplaguenft soon",
        "moon opensea.io/collection/the-plague soon",
        "moon bit.ly/3xYz soon",
        "moon HTTPS://T.CO/ABC soon",
        "moon https://medium.com/@user/post-1 soon",
    ],
)
def test_links_are_removed(pipe: TextPipeline, raw: str) -> None:
    assert pipe.clean(raw) == "moon soon"


def test_words_that_look_like_domains_are_not_links(pipe: TextPipeline) -> None:
    # ".X" is StockTwits' crypto suffix, "it.so" is a typo, not a Somali domain.
    assert pipe.clean("ETH.X did it.so what") == "ETH X did it so what"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("strip_symbol", "Bitcoin to the moon"),
        ("remove", "to the moon"),
        ("keep", "#Bitcoin to the moon"),
    ],
)
def test_hashtags(mode: str, expected: str) -> None:
    assert clean("#Bitcoin to the moon", hashtags=mode) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$ETH.X breaking out", "ETH breaking out"),
        ("$BTC breaking out", "BTC breaking out"),
        ("$eth.x breaking out", "eth breaking out"),
        ("$ETH.X$BTC.X breaking out", "ETH BTC breaking out"),
        ("back to $1,200 soon", "back to 1 200 soon"),
        ("$5k by Friday", "5k by Friday"),
    ],
)
def test_cashtags_become_tickers(pipe: TextPipeline, raw: str, expected: str) -> None:
    assert pipe.clean(raw) == expected


def test_cashtags_remove_and_keep() -> None:
    assert clean("$ETH.X to $2k", cashtags="remove") == "to 2k"
    assert clean("$ETH.X to $2k", cashtags="keep") == "$ETH.X to 2k"


def test_emojis_are_spelled_out(pipe: TextPipeline) -> None:
    assert pipe.clean("ETH 🚀🚀") == "ETH rocket rocket"
    assert pipe.clean("lol😂") == "lol face with tears of joy"
    assert pipe.clean("👍🏽") == "thumbs up medium skin tone"


def test_emojis_remove_and_keep() -> None:
    assert clean("moon 🚀 soon", emojis="remove") == "moon soon"
    assert clean("moon 🚀! soon", emojis="keep") == "moon 🚀 soon"


def test_notebook_symbol_bug_is_gone(pipe: TextPipeline) -> None:
    # The notebook's `[^w\s]` deleted every letter except "w"; `[^\w\s]` deletes symbols only.
    assert pipe.clean("Bitcoin's price!") == "Bitcoins price"
    assert pipe.clean("don't sell, wow!!!") == "dont sell wow"
    assert pipe.clean("ETH-10k / BTC-100k") == "ETH 10k BTC 100k"


def test_lowercase_is_optional() -> None:
    assert clean("BUY The Dip", lowercase=True) == "buy the dip"
    assert clean("BUY The Dip") == "BUY The Dip"


def test_lookalike_letters_are_normalised(pipe: TextPipeline) -> None:
    assert pipe.clean("𝐁𝐢𝐭𝐜𝐨𝐢𝐧 ＄ＥＴＨ") == "Bitcoin ETH"


def test_custom_symbol_pattern() -> None:
    assert clean("up 5% today!", symbol_pattern=r"[^\w\s%]") == "up 5% today"


def test_symbol_pattern_matching_nothing_is_refused() -> None:
    with pytest.raises(UserError) as info:
        TextPipeline(PLAIN.model_copy(update={"symbol_pattern": "x*"}))
    assert info.value.exit_code == 2


def test_notebook_example_end_to_end(pipe: TextPipeline) -> None:
    raw = (
        "$BTC.X $ETH.X you need your head examined if you have any exposure to crypto.  "
        "It&#39;s a ponzi scheme...😂    "
        "https://twitter.com/DeItaone/status/1542590783014027264?s=20&amp;t=b_LaVr50wdWzJEo0lOe8HQ"
    )
    assert pipe.clean(raw) == (
        "BTC ETH you need your head examined if you have any exposure to crypto "
        "Its a ponzi scheme face with tears of joy"
    )


# -- filtering -----------------------------------------------------------------------------------


def test_process_skips_empty_and_short(pipe: TextPipeline) -> None:
    assert pipe.process("@bob https://t.co/x !!!") == CleanResult(
        None, SkipReason.EMPTY_AFTER_CLEANING, None
    )
    short = pipe.process("$OP.X !!")
    assert short.skip_reason is SkipReason.TOO_SHORT
    assert not short.kept
    assert short.text is None
    kept = pipe.process("$ETH.X 2k")
    assert kept.kept
    assert kept.text == "ETH 2k"
    assert kept.language is None  # no language backend configured


def test_process_reports_language() -> None:
    pipe = TextPipeline(TextSettings())
    english = pipe.process("$ETH.X the bears are getting liquidated tonight, buy the dip")
    assert english.kept
    assert english.language == "en"
    spanish = pipe.process("Compré más $ETH en la caída, los que vendieron se van a arrepentir")
    assert spanish.skip_reason is SkipReason.NON_ENGLISH
    assert spanish.language == "es"
    assert spanish.text is None


def test_short_slang_is_kept_as_english() -> None:
    pipe = TextPipeline(TextSettings())
    for raw in ["$ETH.X pump dead", "See ya", "$ETH.X 2k INCOMING", "bullish shitheads"]:
        assert pipe.process(raw).kept, raw


def test_min_chars_zero_still_skips_empty() -> None:
    pipe = TextPipeline(PLAIN.model_copy(update={"min_chars": 0}))
    assert pipe.process("!!!").skip_reason is SkipReason.EMPTY_AFTER_CLEANING
    assert pipe.process("a").kept


def test_language_model_is_not_built_until_needed() -> None:
    pipe = TextPipeline(TextSettings())
    assert pipe._lang is None
    pipe.clean("hello world")
    pipe.process("ok")  # too short: no language question asked
    assert pipe._lang is None


# -- properties ----------------------------------------------------------------------------------

_URL_LIKE = re.compile(r"https?://|www\.|\bt\.co/", re.IGNORECASE)

# Text that looks like tweets, so that the interesting steps fire often; plus arbitrary unicode.
_TWEETISH = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "$ETH.X",
                "$btc",
                "$1,200",
                "#Bitcoin",
                "@elon_musk",
                "https://t.co/abc",
                "www.x.com/a",
                "&amp;#39;",
                "&lt;",
                "🚀",
                "👍🏽",
                "1️⃣",
                "don't",
                "İ",
                "ᄀ'ᅡ",
                "\r\n",
                "\t",
                "'",
                "…",
                "ﬁ",
                "𝐁",
                "\ud800",
            ]
        ),
        st.text(max_size=8),
    ),
    max_size=12,
).map("".join)

_CONFIGS = [
    PLAIN,
    PLAIN.model_copy(update={"lowercase": True}),
    PLAIN.model_copy(update={"hashtags": "keep", "cashtags": "keep", "emojis": "keep"}),
    PLAIN.model_copy(update={"hashtags": "remove", "cashtags": "remove", "emojis": "remove"}),
    PLAIN.model_copy(update={"unicode_normalization": "none", "unescape_html": False}),
]
_PIPES = [TextPipeline(c) for c in _CONFIGS]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(st.text(), _TWEETISH), which=st.integers(0, len(_PIPES) - 1))
def test_clean_is_idempotent_and_total(raw: str, which: int) -> None:
    pipe = _PIPES[which]
    once = pipe.clean(raw)
    assert pipe.clean(once) == once
    assert once == once.strip()
    assert "  " not in once
    once.encode("utf-8")  # no lone surrogates survive


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.text(), _TWEETISH))
def test_default_output_has_no_links_or_mentions(raw: str) -> None:
    out = _PIPES[0].clean(raw)
    assert "@" not in out
    assert not _URL_LIKE.search(out)
    assert re.fullmatch(r"[\w ]*", out)


_FULL = TextPipeline(TextSettings())


@settings(max_examples=150, deadline=None)
@given(raw=st.one_of(st.text(), _TWEETISH))
def test_process_never_raises(raw: str) -> None:
    result = _FULL.process(raw)
    assert (result.text is None) == (result.skip_reason is not None)


@settings(max_examples=60, deadline=None)
@given(raws=st.lists(st.one_of(st.text(), _TWEETISH), max_size=8))
def test_batch_equals_map_of_single(raws: list[str]) -> None:
    assert _FULL.process_batch(raws) == [_FULL.process(r) for r in raws]


def test_batch_of_nothing() -> None:
    assert _FULL.process_batch([]) == []
