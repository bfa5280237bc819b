"""Generate notebooks/01_annotation.ipynb: Stage 1 sampling and expert annotation."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import make_notebook, notebook_path  # noqa: E402

CELLS = [
    ("md", """
# 01 Annotation: expert reasoning for a quarter of the training set

MORE-R1 starts with a *cold start*: a small set of worked examples, each a six-step reasoning
that ends in the right label, on which the model is fine-tuned (notebook 03). Writing such
reasoning by hand is slow, so the paper asks an expert model (GPT-4o) to write it, telling the
expert the gold answer so that its reasoning leads somewhere correct.

This notebook

1. samples 25% of the training set **from each relation** (stratified, seeded); the other 75%
   is kept aside as the Stage 2 pool;
2. builds the expert prompt for each sampled fact and estimates what the calls will cost;
3. sends the requests to an OpenAI-compatible endpoint and stores every answer the moment it
   arrives, so that an interrupted run resumes where it stopped.

In the toy profile the expert is `morelib.expert_server`, a small local server that speaks the
OpenAI API and writes reasoning from the facts behind each toy image. The paper profile points
`base_url` at the real API with `model = "gpt-4o"`; nothing else changes.
"""),
    ("params", """
profile = "toy"
run_dir = "runs/toy"
seed = 0
data_dir = "runs/toy/data"        # the MORE layout, the toy data is written by notebook 00
fraction = 0.25                   # share of every relation sent to the expert (paper: 25%)
offline_expert = True             # start the loopback toy expert (False: call base_url)
base_url = "https://api.openai.com/v1"
model = "toy-expert"              # paper: "gpt-4o"
api_key_env = "OPENAI_API_KEY"    # the key is read from this environment variable only
template_path = None              # None: morelib/templates/expert_prompt.txt
image_detail = "low"              # "low" | "high" | "auto"
concurrency = 8
request_timeout = 60.0            # seconds per attempt
max_retries = 8
max_tokens = 1024
temperature = None                # None: the endpoint default
expected_output_tokens = 130      # assumed reply length for the estimate (paper: ~500)
price_input_per_m = 2.50          # USD per 1M input tokens (GPT-4o)
price_output_per_m = 10.00        # USD per 1M output tokens (GPT-4o)
cost_threshold = 5.0              # USD, a larger estimate needs confirm_cost True
confirm_cost = False
expert_mistake_rate = 0.08        # toy expert only: share of replies with an expert mistake
write_batch_input = False         # also write OpenAI Batch API input files for pending requests
"""),
    ("code", """
import os
from collections import Counter

import pandas as pd

from morelib import annotate
from morelib.annotate import AnnotationConfig
from morelib.config import resolve_path
from morelib.data import load_images, load_split

cfg = AnnotationConfig(
    data_dir=data_dir, run_dir=run_dir, fraction=fraction, seed=seed, base_url=base_url, model=model,
    api_key_env=api_key_env, template_path=template_path, image_detail=image_detail,
    concurrency=concurrency, request_timeout=request_timeout, max_retries=max_retries,
    max_tokens=max_tokens, temperature=temperature, expected_output_tokens=expected_output_tokens,
    price_input_per_m=price_input_per_m, price_output_per_m=price_output_per_m,
    cost_threshold=cost_threshold, confirm_cost=confirm_cost,
)
train = load_split(resolve_path(data_dir), "train")
print(f"{len(train)} training facts in {resolve_path(data_dir)}")
"""),
    ("md", """
## 1. A stratified 25% sample

Sampling per relation keeps rare relations in the cold-start set: each relation contributes
`round(fraction x count)` facts (at least one), drawn with a generator seeded by `seed` and
the relation's name. The ids go to `annotation/split_ids.json`; notebook 04 uses the other
75% (`stage2_pool`) for the easy/hard split.
"""),
    ("code", """
stage1, pool = annotate.stratified_split(train, fraction, seed)
print(annotate.write_split_ids(run_dir, stage1, pool))
chosen = set(stage1)
counts = pd.DataFrame({
    "train": Counter(s.label for s in train),
    "stage1": Counter(s.label for s in train if s.id in chosen),
}).fillna(0).astype(int)
counts["share"] = (counts["stage1"] / counts["train"]).round(2)
print(f"stage 1: {len(stage1)} facts, stage 2 pool: {len(pool)} facts")
counts
"""),
    ("md", """
## 2. The expert prompt

The prompt has the paper's three parts: the **basic task description** (the same text the
student sees later), **six stepwise instructions** (object analysis, image-text relevance,
cross-modal alignment, entity types, candidate filtering by the type pair, decision), and the
**gold answer** (types and relation, or that there is no relation) with the request to reason
as if it had not been given. The template is one file, `template_path`; put the authors' own
wording there to use it. Both images, the full picture and the object crop, go with the text.
"""),
    ("code", """
requests = annotate.plan_requests([s for s in train if s.id in chosen], cfg)
example = next(r for r in requests if r.sample.label != "none")
full, crop = load_images(example.sample)
display(full, crop)
print(f"{example.sample_id} (gold {example.sample.label}), prompt hash {example.prompt_hash}\\n")
print(example.prompt_text)
"""),
    ("md", """
## 3. What it will cost

Before any call we count tokens: the text at about four characters per token, each image by
its detail level (85 tokens at `low`; at `high`, 85 plus 170 per 512-pixel tile after scaling
to 2048 px and a 768-px short side), and the expected reply length. Above `cost_threshold`
the run refuses to start unless `confirm_cost = True`. Requests already answered are not
counted: they will not be sent again.
"""),
    ("code", """
store = annotate.ResponseStore(annotate.store_path(run_dir))
todo = annotate.pending(requests, store, model)
estimate = annotate.estimate_cost(todo, cfg)
print(f"{len(requests) - len(todo)} of {len(requests)} already answered")
print(estimate.summary())
annotate.check_budget(estimate, cfg)
"""),
    ("md", """
## 4. Asking the expert

The client is the official `openai` package, so any OpenAI-compatible endpoint works (OpenAI,
Azure-style gateways, a vLLM server). The API key comes from the environment variable named by
`api_key_env` and is never written anywhere. Requests run `concurrency` at a time; 429s, 5xx
errors, timeouts and broken replies are retried with exponential backoff, waiting at least as
long as a `Retry-After` header asks. Each finished request is appended to
`annotation/responses.jsonl` and flushed at once, so killing the run loses only the requests in
flight, and running this cell again sends only what is missing.

For the toy profile we start the offline expert here. It needs no key; we put a placeholder in
the environment only if none is set.
"""),
    ("code", """
server = None
if offline_expert:
    from morelib.expert_server import ExpertConfig, ExpertServer

    meta_path = resolve_path(data_dir) / "toy_meta.jsonl"
    server = ExpertServer(ExpertConfig(str(meta_path), seed=seed, mistake_rate=expert_mistake_rate,
                                       model=model)).start()
    cfg.base_url = server.base_url
    os.environ.setdefault(api_key_env, "offline-expert-needs-no-key")
print("expert endpoint:", cfg.base_url)
"""),
    ("code", """
try:
    report = annotate.annotate(cfg)
finally:
    if server is not None:
        server.stop()
print(report.summary())
print(annotate.save_report(run_dir, report, cfg))
"""),
    ("md", """
## 5. What came back

The store holds one line per request: sample id, prompt hash, model, the raw reply, the token
usage the endpoint reported, timestamps and any error. The actual cost is tallied from the
reported usage. Notebook 02 filters these replies.
"""),
    ("code", """
from morelib import cost

records = store.records()
print(f"{len(records)} records in {store.path}")
print("actual cost of all records:", cost.tally(records, cfg.prices))
record = next(r for r in reversed(records) if r["response"])
print({k: v for k, v in record.items() if k != "response"})
print(record["response"])
"""),
    ("md", """
## 6. Beyond the paper: the Batch API

OpenAI's Batch API halves the price for anyone who can wait up to 24 hours. `write_batch_files`
writes the pending requests as Batch input files (split under the 200 MB limit); upload them
with `purpose="batch"`, create a batch for `/v1/chat/completions`, and pass the downloaded
output file to `annotate.ingest_batch_results(cfg, path)`, which adds the answers to the same
store. From a shell: `python -m morelib.annotate batch-write ...` and `... batch-ingest --results FILE`.
"""),
    ("code", """
if write_batch_input:
    paths = annotate.write_batch_files(cfg)
    print(paths or "nothing pending: every request already has an answer")
"""),
]

if __name__ == "__main__":
    print(make_notebook(CELLS, notebook_path("01_annotation")))
