"""JSON Schema export. `python -m schemas.export` rewrites `schemas/json/`; a unit test fails when
the committed files drift from the models."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.alerts import Alert
from schemas.messages import DeadLetter, SentimentOut, TweetIn
from schemas.text import TextConfig

EXPORTED: dict[str, type[BaseModel]] = {
    "tweet_in": TweetIn,
    "sentiment_out": SentimentOut,
    "dead_letter": DeadLetter,
    "alert": Alert,
    # The text pipeline configuration every model artifact carries (cryptosent.json "text").
    "text_config": TextConfig,
}

JSON_DIR = Path(__file__).parent / "json"


def render(model: type[BaseModel]) -> str:
    schema = model.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in EXPORTED.items():
        path = directory / f"{name}.schema.json"
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in export():
        print(p)
