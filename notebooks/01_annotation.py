# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (morelib)
#     language: python
#     name: morelib
# ---

# %% [markdown]
# # 01 Annotation: expert reasoning for a quarter of the training set
#
# MORE-R1 starts with a *cold start*: a small set of worked examples, each a six-step reasoning
# that ends in the right label, on which the model is fine-tuned (notebook 03). Writing such
# reasoning by hand is slow, so the paper asks an expert model (GPT-4o) to write it, telling the
# expert the gold answer so that its reasoning leads somewhere correct.
#
# This notebook
#
# 1. samples 25% of the training set **from each relation** (stratified, seeded); the other 75%
#    is kept aside as the Stage 2 pool;
# 2. builds the expert prompt for each sampled fact and estimates what the calls will cost;
# 3. sends the requests to an OpenAI-compatible endpoint and stores every answer the moment it
#    arrives, so that an interrupted run resumes where it stopped.
#
# In the toy profile the expert is `morelib.expert_server`, a small local server that speaks the
# OpenAI API and writes reasoning from the facts behind each toy image. The paper profile points
# `base_url` at the real API with `model = "gpt-4o"`; nothing else changes.

# %% tags=["parameters"]
profile = "toy"     # configs/toy.yaml (2 CPU cores) or "paper"; every setting is documented in morelib/settings.py
run_dir = None      # None: the profile's run directory
# each override is one "key=value" string, e.g. ["expert_mistake_rate=0.3"]
overrides = []      # settings changed for this run only; the comment above shows the form

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: no bars in notebooks

from collections import Counter

import pandas as pd

from morelib import annotate, batch_api, cost, expert_requests, expert_store, splits, trace, trace_view
from morelib.config import describe, load_settings, with_changes
from morelib.data import load_images, load_split
from morelib.layout import RunLayout
from morelib.prompts import prompt_template, student_prompt

cfg = load_settings("01_annotation", profile, overrides, run_dir)
layout = RunLayout(cfg.run_dir)
train = load_split(cfg.data_dir, "train")
print(f"{len(train)} training facts in {cfg.data_dir}")
display(describe(cfg, ["fraction", "model", "offline_expert", "image_detail", "concurrency", "cost_threshold"]))

# %% [markdown]
# ## 1. A stratified 25% sample
#
# Sampling per relation keeps rare relations in the cold-start set: each relation contributes
# `round(fraction x count)` facts (at least one; `round` is Python's, half to even, so 2.5 -> 2, the
# rule notebook 05's mix uses too; the paper states none: *inferred*), drawn with a generator seeded by `seed` and
# the relation's name. The ids go to `annotation/split_ids.json`; notebook 04 uses the other
# 75% (`stage2_pool`) for the easy/hard split.

# %%
stage1, pool = splits.stratified_split(train, cfg.fraction, cfg.seed)
print(splits.write_split_ids(layout, stage1, pool))
chosen = set(stage1)
counts = pd.DataFrame({
    "train": Counter(s.label for s in train),
    "stage1": Counter(s.label for s in train if s.id in chosen),
}).fillna(0).astype(int)
counts["share"] = (counts["stage1"] / counts["train"]).round(2)
print(f"stage 1: {len(stage1)} facts, stage 2 pool: {len(pool)} facts")
counts

# %% [markdown]
# ## 2. The expert prompt, beside the student's
#
# The prompt has the paper's three parts: the **basic task description** (the same text the
# student sees later), **six stepwise instructions** (object analysis, image-text relevance,
# cross-modal alignment, entity types, candidate filtering by the type pair, decision), and the
# **gold answer** (types and relation, or that there is no relation) with the request to reason
# as if it had not been given. The template is one file, `template_path`; put the authors' own
# wording there to use it. Both images, the full picture and the object crop, go with the text.
#
# Below, for the **traced Stage 1 fact** that notebook 00 chose (`trace.json`): on the left what
# the *student* will see in Stage 1, at inference and in GRPO, only the basic task description
# (`morelib.prompts.student_prompt` with the reasoning template: two image placeholders, then the
# text); on the right what the *expert* is asked. The student never sees the steps' wording or
# the answer: it must learn both from the expert's replies.

# %%
requests = expert_requests.plan_requests([s for s in train if s.id in chosen], cfg)
requests_by_id = {r.sample_id: r for r in requests}
traced = trace.load(layout)
if traced is None:
    print("no trace.json in this run (notebook 00 writes it): showing the first relation fact instead")
elif traced.stage1_id not in requests_by_id:
    print(f"traced fact {traced.stage1_id} is not in this run's Stage 1 quarter (did 00 and 01 use another "
          "fraction or seed?): showing the first relation fact instead")
    traced = None
example = requests_by_id[traced.stage1_id] if traced else next(r for r in requests if r.sample.label != "none")
full, crop = load_images(example.sample)
display(full, crop)
print(f"{example.sample_id} (gold {example.sample.label}), prompt hash {example.prompt_hash}")
student_messages = student_prompt(example.sample, prompt_template("reasoning"))
student_text = "\n".join(f"[{part['type']}]" if part["type"] == "image" else part["text"]
                          for part in student_messages[0]["content"])
display(trace_view.side_by_side(f"student prompt ({example.sample_id})", student_text,
                           f"expert prompt ({example.sample_id})", "[image]\n[image]\n" + example.prompt_text))

# %% [markdown]
# ## 3. What it will cost
#
# Before any call we count tokens: the text at about four characters per token, each image by
# its detail level (85 tokens at `low`; at `high`, 85 plus 170 per 512-pixel tile after scaling
# to 2048 px and a 768-px short side), and the expected reply length. Above `cost_threshold`
# the run refuses to start unless `confirm_cost = True`. Requests already answered are not
# counted: they will not be sent again.

# %%
store = expert_store.ResponseStore.for_run(layout)
todo = expert_store.pending(requests, store, cfg.model)
estimate = cost.estimate_cost(todo, cfg)
print(f"{len(requests) - len(todo)} of {len(requests)} already answered")
print(estimate.summary())
cost.check_budget(estimate, cfg)

# %% [markdown]
# ## 4. Asking the expert
#
# The client is the official `openai` package, so any OpenAI-compatible endpoint works (OpenAI,
# Azure-style gateways, a vLLM server). The API key comes from the environment variable named by
# `api_key_env` and is never written anywhere. Requests run `concurrency` at a time; 429s, 5xx
# errors, timeouts and broken replies are retried with exponential backoff, waiting at least as
# long as a `Retry-After` header asks. Each finished request is appended to
# `annotation/responses.jsonl` and flushed at once, so killing the run loses only the requests in
# flight, and running this cell again sends only what is missing.
#
# For the toy profile we start the offline expert here. It needs no key; we put a placeholder in
# the environment only if none is set.

# %%
# The toy profile serves the offline expert on a loopback port for the duration of the call;
# the paper profile calls GPT-4o at base_url. The key comes from the environment only.
with annotate.expert_endpoint(cfg) as endpoint:
    print("expert endpoint:", endpoint.base_url)
    report = annotate.annotate(endpoint)
print(report.summary())
print(annotate.save_report(layout, report, cfg))

# %% [markdown]
# ## 5. What came back
#
# The store holds one line per request: sample id, prompt hash, model, the raw reply, the token
# usage the endpoint reported, timestamps and any error. The actual cost is tallied from the
# reported usage. Below, the record of the fact of section 2 (the traced one): notebook 02
# decides whether its reply is kept.

# %%
records = store.records()
print(f"{len(records)} records in {store.path}")
print("actual cost of all records:", cost.tally(records, cost.Prices.from_settings(cfg)))
record = trace_view.expert_reply(layout, example.sample_id, cfg.model)
if record is None:
    print(f"{example.sample_id}: no record stored")
else:
    print({k: v for k, v in record.items() if k != "response"})
    print(record["response"] or f"no reply: {record.get('error')}")

# %% [markdown]
# ## 6. Beyond the paper: the Batch API
#
# OpenAI's Batch API halves the price for anyone who can wait up to 24 hours. `write_batch_files`
# writes the pending requests as Batch input files (split under the 200 MB limit); upload them
# with `purpose="batch"`, create a batch for `/v1/chat/completions`, and pass the downloaded
# output file to `batch_api.ingest_batch_results(cfg, path)`, which adds the answers to the same
# store. From a shell: `python -m morelib.annotate batch-write ...` and `... batch-ingest --results FILE`.

# %%
if cfg.write_batch_input:
    paths = batch_api.write_batch_files(cfg)
    print(paths or "nothing pending: every request already has an answer")

# %% [markdown]
# ## Exercises
#
# Each takes a few minutes. The cell below does nothing until you set its values: guess first,
# then run it.
#
# 1. **The stratified quarter.** Set `fraction_to_try = 0.10`: how many facts of the rarest
#    relation does Stage 1 get? Why does `stratified_split` give every relation at least one?
# 2. **The gold statement.** Set `show_gold_statements = True` to print it for a `none` fact and
#    for a relation fact. Why does the paper give the expert the answer at all, and what could go
#    wrong when it does (think of the reasoning checks in notebooks 06 and 07)?
# 3. **Cost.** The toy expert gets its images at `low` detail (85 tokens each). Set
#    `detail_to_try = "high"`: how much of the price is images? The toy images are tiny; what
#    changes for 1280-pixel news photos?

# %%
fraction_to_try = None       # e.g. 0.10
show_gold_statements = False
detail_to_try = None         # e.g. "high"

if fraction_to_try is not None:
    few, rest = splits.stratified_split(train, fraction_to_try, cfg.seed)
    few_counts = Counter(s.label for s in train if s.id in set(few))
    print(f"fraction {fraction_to_try}: {len(few)} facts; rarest relations:",
          sorted(few_counts.items(), key=lambda item: item[1])[:3])
if show_gold_statements:
    for example in (next(s for s in train if s.label == "none"), next(s for s in train if s.label != "none")):
        print(expert_requests.gold_statement(example))
if detail_to_try is not None:
    print(cost.estimate_cost(requests, with_changes(cfg, image_detail=detail_to_try)).summary())
