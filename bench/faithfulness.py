"""Which of the served explanations can be trusted, on these models: ERASER's comprehensiveness and sufficiency
(DeYoung et al., 2020) of the per-token attention, attention rollout, occlusion and a random ranking, through the
real server — and, on the needle task, how often each ranking's top token is the word that decides the label.

    python bench/faithfulness.py --out DIR [--texts 300] [--datasets bundled,needle,imported]

For each text the server returns its prediction, attention, rollout and occlusion in one request. Each ranking of the
text's tokens (special tokens excluded) keeps or removes its top 1, 5, 10, 20 and 50 % (at least one token); those
texts go back to the server as token ids, and the predicted class's probability is read:

- comprehensiveness = mean over the bins of p(class | text) − p(class | text without the top tokens): higher is
  more faithful (removing what the explanation points at should lose the prediction);
- sufficiency = mean over the bins of p(class | text) − p(class | the top tokens alone): lower is more faithful.

Datasets: the bundled model on its own test split (seed 0), our classifier trained on the needle task
(``python -m model_export train --needle``), and an imported model: examples/custom_attention (the seed's
``CustomAttention`` layer) trained on the needle task and imported with ``python -m model_export import``. The
models are built into ``DIR`` once. The metrics are ``service/explain.py``'s, the same code as the service's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import servers
from service.explain import FRACTIONS, aopc, erased, only, top_positions

RANKINGS = ("attention", "rollout", "occlusion", "random")
NEEDLES = ("alpha", "bravo", "charlie")
CHUNK = 64


@dataclass
class Scores:
    dataset: str
    model: str
    texts: int
    comprehensiveness: dict[str, float]
    sufficiency: dict[str, float]
    needle_top: dict[str, float] | None


def texts_for(dataset: str, count: int) -> list[str]:
    from model_export.data import load_bundled_corpus, needle_task, split_dataset

    if dataset == "bundled":
        texts, _ = split_dataset(load_bundled_corpus(), 0.1, 0.1, 0).test
        return list(texts[:count])
    return needle_task(count, seed=2026).texts


def build_models(out: Path, datasets: list[str]) -> Path:
    """The needle-task classifier and the imported seed model that ``datasets`` need, in ``out/repository`` (once),
    beside the bundled model."""
    repository = out / "repository"
    (repository / "sentiment").mkdir(parents=True, exist_ok=True)
    if not (repository / "sentiment" / "1").exists():
        (repository / "sentiment" / "1").symlink_to(servers.ROOT / "models" / "sentiment" / "1")
    python = sys.executable
    if "needle" in datasets and not (repository / "needle").exists():
        command = [python, "-m", "model_export", "train", "--needle", "3000", "--name", "needle", "--repository",
                   str(repository), "--variants", "none", "--epochs", "6", "--quiet"]  # fmt: skip
        subprocess.run(command, cwd=servers.ROOT, check=True, capture_output=True)
    if "imported" in datasets and not (repository / "seed").exists():
        example = servers.ROOT / "examples" / "custom_attention"
        work = out / "seed"
        subprocess.run([python, str(example / "train.py"), "--out", str(work)], cwd=servers.ROOT, check=True,
                       capture_output=True)  # fmt: skip
        command = [python, "-m", "model_export", "import", str(work / "model.keras"), "--labels", "a,b,c",
                   "--vocab", str(work / "vocab.txt"), "--custom-objects", str(example / "layers.py"),
                   "--attention-layer", "custom_attention", "--max-len", "64", "--name", "seed",
                   "--repository", str(repository)]  # fmt: skip
        subprocess.run(command, cwd=servers.ROOT, check=True, capture_output=True)
    return repository


def explain(url: str, model: str, texts: list[str]) -> list[dict[str, object]]:
    """Each text's prediction with tokens, attention, rollout and occlusion (one text per request: its variants)."""
    rows = []
    for text in texts:
        body = {"instances": [text], "parameters": {"attention": ["pooling", "rollout"], "explain": "occlusion"}}
        response = httpx.post(f"{url}/v1/models/{model}:predict", json=body, timeout=120)
        response.raise_for_status()
        rows.append(response.json()["predictions"][0])
    return rows


def probabilities(url: str, model: str, sequences: list[list[int]]) -> np.ndarray:
    found = []
    for start in range(0, len(sequences), CHUNK):
        body = {"instances": sequences[start : start + CHUNK], "parameters": {"attention": "none"}}
        response = httpx.post(f"{url}/v1/models/{model}:predict", json=body, timeout=120)
        response.raise_for_status()
        found += [list(p["probabilities"].values()) for p in response.json()["predictions"]]
    return np.asarray(found)


def score(url: str, model: str, dataset: str, rows: list[dict[str, object]], vocab: dict[str, int]) -> Scores:
    """Every ranking's AOPC comprehensiveness and sufficiency over the texts (and the needle's rank on the needle)."""
    rng = np.random.default_rng(0)
    variants: list[list[int]] = []
    plan: list[tuple[int, str, str, float]] = []  # (text, ranking, kind, base probability) per variant
    needle_hits: dict[str, list[bool]] = {r: [] for r in RANKINGS}
    for index, row in enumerate(rows):
        tokens = list(row["tokens"])  # type: ignore[call-overload]
        ids = np.asarray([vocab[t] for t in tokens])
        specials = np.asarray([i for i, o in enumerate(row["offsets"]) if o[1] <= o[0]], dtype=int)  # type: ignore[attr-defined]
        candidates = np.asarray([i for i in range(len(ids)) if i not in set(specials.tolist())])
        label_index = int(np.argmax(list(row["probabilities"].values())))  # type: ignore[attr-defined]
        base = float(list(row["probabilities"].values())[label_index])  # type: ignore[attr-defined]
        rankings = {
            "attention": np.asarray(row.get("attention", np.zeros(len(ids)))),  # type: ignore[attr-defined]
            "rollout": np.asarray(row.get("rollout", np.zeros(len(ids)))),  # type: ignore[attr-defined]
            "occlusion": np.asarray(row["occlusion"]),
            "random": rng.random(len(ids)),
        }
        for name, scores in rankings.items():
            needle_hits[name].append(tokens[int(top_positions(scores, 0.0, candidates)[0])] in NEEDLES)
            for fraction in FRACTIONS:
                top = top_positions(scores, fraction, candidates)
                variants.append(erased(ids, top).tolist() or ids[:1].tolist())
                plan.append((index, name, "comprehensiveness", base))
                variants.append(only(ids, top, specials).tolist())
                plan.append((index, name, "sufficiency", base))
    answers = probabilities(url, model, variants)
    targets = [int(np.argmax(list(rows[i]["probabilities"].values()))) for i, _, _, _ in plan]  # type: ignore[attr-defined]
    drops: dict[tuple[str, str], list[float]] = {}
    for (_, name, kind, base), answer, target in zip(plan, answers, targets, strict=True):
        drops.setdefault((name, kind), []).append(aopc(base, np.asarray([answer[target]])))
    mean = {key: round(float(np.mean(values)), 4) for key, values in drops.items()}
    needle = None if dataset == "bundled" else {name: round(float(np.mean(h)), 3) for name, h in needle_hits.items()}
    return Scores(
        dataset, model, len(rows),
        {name: mean[(name, "comprehensiveness")] for name in RANKINGS},
        {name: mean[(name, "sufficiency")] for name in RANKINGS},
        needle,
    )  # fmt: skip


def vocabulary(folder: Path) -> dict[str, int]:
    from tokenizers import Tokenizer

    return dict(Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab())


def table(results: list[Scores]) -> str:
    lines = [
        "| dataset (model) | texts | ranking | comprehensiveness ↑ | sufficiency ↓ | top token is the needle |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        for name in RANKINGS:
            needle = f"{r.needle_top[name]:.1%}" if r.needle_top else "-"
            lines.append(
                f"| {r.dataset} ({r.model}) | {r.texts} | {name} | {r.comprehensiveness[name]:.4f} | "
                f"{r.sufficiency[name]:.4f} | {needle} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--datasets", default="bundled,needle,imported")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = args.datasets.split(",")
    repository = build_models(args.out, datasets)
    plan = {"bundled": ("sentiment", "bundled"), "needle": ("needle", "needle"), "imported": ("seed", "needle")}
    spec = servers.service_spec("faithfulness", repository=repository)
    results = []
    with servers.running([spec], args.out) as (server,):
        url = f"http://127.0.0.1:{server.port}"
        for dataset in datasets:
            model, source = plan[dataset]
            folder = max((repository / model).glob("[0-9]*"), key=lambda p: int(p.name))
            rows = explain(url, model, texts_for(source, args.texts))
            results.append(score(url, model, dataset, rows, vocabulary(folder)))
            print(json.dumps(asdict(results[-1])), flush=True)
    (args.out / "faithfulness.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    (args.out / "faithfulness.md").write_text(table(results) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
