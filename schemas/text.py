"""`TextConfig`: the text pipeline's configuration, a contract between training and serving.

Every model artifact saves it (`cryptosent.json`, key `text`) and serving rebuilds the pipeline from
the artifact's copy, so what was trained on is exactly what is served. Fields may be added with
defaults; renaming or removing one breaks every artifact already written.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LangBackend = Literal["py3langid", "langdetect", "none"]


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    unescape_html: bool = True
    # NFKC turns full-width and "mathematical bold" look-alikes (frequent in shill tweets) into
    # plain letters the tokenizer knows.
    unicode_normalization: Literal["NFKC", "NFC", "none"] = "NFKC"
    remove_mentions: bool = True
    remove_urls: bool = True
    # "#Bitcoin" -> "Bitcoin": the word carries the sentiment-relevant signal, the '#' does not.
    hashtags: Literal["strip_symbol", "remove", "keep"] = "strip_symbol"
    # "$ETH.X" -> "ETH": the ticker tells which coin is discussed; '$' and the '.X' suffix
    # (StockTwits' crypto marker) are noise.
    cashtags: Literal["ticker", "remove", "keep"] = "ticker"
    # Emojis carry much of the sentiment in crypto chatter (rocket, chart decreasing); a WordPiece
    # vocabulary maps them to [UNK], so they are spelled out as words.
    emojis: Literal["demojize", "remove", "keep"] = "demojize"
    # The intended version of the notebook's buggy `[^w\s]`.
    symbol_pattern: str = r"[^\w\s]"
    lowercase: bool = False
    min_chars: int = Field(default=3, ge=0)
    lang_backend: LangBackend = "py3langid"
    lang_min_confidence: float = Field(default=0.95, ge=0.0, le=1.0)
    lang_min_chars: int = Field(default=20, ge=0)
    # A text whose letters are mostly non-Latin (and at least this many) is not English however
    # short it is; see `stream.core.lang`.
    lang_min_script_letters: int = Field(default=2, ge=1)
    lang_seed: int = 0

    @field_validator("symbol_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"symbol_pattern is not a valid regular expression: {exc}") from exc
        return value
