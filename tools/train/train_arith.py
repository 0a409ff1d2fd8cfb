#!/usr/bin/env python3
"""Trains Chorus's arithmetic model from scratch and exports it as a GGUF.

    /usr/bin/python3 tools/train/train_arith.py --out models/arith.gguf

writes models/arith.gguf, models/arith-eval.jsonl (the eval set, disjoint from the training
problems) and models/arith.train.json (losses, timings and the accuracies measured on the
exported weights). Deterministic: fixed seeds, one CPU thread (Debian's python3-torch; the
numbers in models/arith.PROVENANCE.md came from OpenBLAS, libopenblas0-serial). See
tools/train/README.md.
"""

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arith_lib as A  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="models/arith.gguf", help="GGUF to write")
    p.add_argument("--eval-out", default=None, help="eval JSONL (default: <out stem>-eval.jsonl)")
    p.add_argument("--report", default=None, help="JSON report (default: <out stem>.train.json)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--steps", type=int, default=1150)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-frac", type=float, default=0.1, help="cosine floor as a fraction of --lr")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=384)
    p.add_argument("--context-length", type=int, default=128,
                   help="llama.context_length in the GGUF (training sequences are at most 80 "
                        "tokens); with 128, prompt + max_tokens must fit in 128, so pass "
                        "--max-tokens 64 to chorus-run and chorus generate (their defaults, 256 "
                        "and 128, do not fit)")
    p.add_argument("--min-terms", type=int, default=3)
    p.add_argument("--max-terms", type=int, default=4)
    p.add_argument("--min-digits", type=int, default=2)
    p.add_argument("--max-digits", type=int, default=3)
    p.add_argument("--eval-size", type=int, default=200)
    p.add_argument("--eval-samples", type=int, default=8)
    p.add_argument("--eval-temperature", type=float, default=0.8)
    p.add_argument("--extra-eval-temperatures", default="1.0",
                   help="comma-separated temperatures also reported (after the main one)")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=0,
                   help="during training, evaluate 100 eval problems every N steps (tuning only)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    stem = os.path.splitext(args.out)[0]
    eval_out = args.eval_out or stem + "-eval.jsonl"
    report_out = args.report or stem + ".train.json"
    spec = A.TaskSpec(args.min_terms, args.max_terms, args.min_digits, args.max_digits)
    tok = A.CharTokenizer()
    t_start = time.time()

    # Eval set first (its own stream), then the training problems (another stream) with every
    # eval question skipped; disjointness is asserted on the whole training list.
    eval_rng = random.Random(args.seed * 2 + 1)
    eval_set, seen = [], set()
    while len(eval_set) < args.eval_size:
        q, sol, ans = A.make_problem(eval_rng, spec)
        if q not in seen:
            seen.add(q)
            eval_set.append((q, sol, ans))
    eval_questions = {q for q, _, _ in eval_set}
    train_rng = random.Random(args.seed * 2)
    train, skipped = [], 0
    while len(train) < args.steps * args.batch:
        q, sol, ans = A.make_problem(train_rng, spec)
        if q in eval_questions:
            skipped += 1
            continue
        train.append((q, sol))
    assert not eval_questions & {q for q, _ in train}, "eval and training problems overlap"
    print(f"task: {spec.describe()}; {len(train)} training problems "
          f"({len({q for q, _ in train})} distinct, {skipped} eval questions skipped), "
          f"{len(eval_set)} eval problems", flush=True)

    cfg = A.Config(tok.vocab_size, args.dim, args.layers, args.heads, args.kv_heads, args.ffn,
                   context_length=args.context_length)
    model = A.Llama(cfg)
    model.init_weights(torch.Generator().manual_seed(args.seed))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters, {cfg.as_dict()}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-8)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        floor = args.min_lr_frac
        return args.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))

    def batch_tensors(items):
        seqs, starts = [], []
        for q, sol in items:
            prompt = tok.encode(q)
            seqs.append(prompt + tok.encode("\n" + sol, bos=False) + [A.EOS])
            starts.append(len(prompt))  # first target: the token after the question
        T = max(len(s) for s in seqs)
        assert T <= cfg.context_length
        x = torch.full((len(seqs), T - 1), A.EOS, dtype=torch.long)
        y = torch.full((len(seqs), T - 1), -100, dtype=torch.long)
        for b, (s, st) in enumerate(zip(seqs, starts)):
            x[b, :len(s) - 1] = torch.tensor(s[:-1])
            y[b, st - 1:len(s) - 1] = torch.tensor(s[st:])
        return x, y

    log = []
    t_train = time.time()
    run_loss, run_n = 0.0, 0
    model.train()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = batch_tensors(train[step * args.batch:(step + 1) * args.batch])
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_loss += loss.item()
        run_n += 1
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            el = time.time() - t_train
            entry = {"step": step + 1, "loss": run_loss / run_n, "lr": lr_at(step), "elapsed_s": el}
            log.append(entry)
            print(f"step {step + 1:5d}  loss {run_loss / run_n:.4f}  lr {lr_at(step):.2e}  "
                  f"{el:7.1f} s", flush=True)
            run_loss, run_n = 0.0, 0
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            t_e = time.time()
            model.eval()
            r = A.evaluate(model, tok, [(q, a) for q, _, a in eval_set[:100]], args.eval_samples,
                           args.eval_temperature, seed=args.seed + 7)
            model.train()
            t_train += time.time() - t_e  # the training time excludes these evaluations
            log[-1]["eval100"] = {k: r[k] for k in ("greedy", "single", "vote")}
            print(f"  eval100 greedy {r['greedy']:.3f} single {r['single']:.3f} "
                  f"vote@{args.eval_samples} {r['vote']:.3f}", flush=True)
    train_s = time.time() - t_train
    final_loss = log[-1]["loss"]

    # Export: the PyTorch model is rounded to the F16 weights the file holds, so every number
    # below is measured on exactly the exported weights.
    model.eval()
    A.round_weights_to_f16(model)
    with torch.no_grad():
        xs, ys = batch_tensors([(q, s) for q, s, _ in eval_set])
        eval_loss = F.cross_entropy(model(xs).reshape(-1, cfg.vocab_size), ys.reshape(-1),
                                    ignore_index=-100).item()
    name = os.path.basename(stem)
    desc = (f"Chained addition with worked steps ({spec.describe()}), trained by "
            f"tools/train/train_arith.py --seed {args.seed} --steps {args.steps}")
    size = A.export_gguf(model, tok, args.out, "chorus-" + name, desc)
    with open(args.out, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    with open(eval_out, "w") as f:
        for q, sol, ans in eval_set:
            f.write(json.dumps({"question": q, "answer": f"{sol}\n#### {ans}"}) + "\n")

    t_eval = time.time()
    problems = [(q, a) for q, _, a in eval_set]
    res = A.evaluate(model, tok, problems, args.eval_samples, args.eval_temperature,
                     seed=args.seed + 7)
    extra = {}
    for t in [float(x) for x in args.extra_eval_temperatures.split(",") if x]:
        extra[t] = A.evaluate(model, tok, problems, args.eval_samples, t, seed=args.seed + 7)
    eval_s = time.time() - t_eval
    total_s = time.time() - t_start
    print(f"final train loss {final_loss:.4f}, eval loss {eval_loss:.4f} (F16 weights)")
    for t, r in [(args.eval_temperature, res)] + list(extra.items()):
        print(f"eval ({r['n']} problems, T={t}): greedy {r['greedy']:.3f}, "
              f"single sample {r['single']:.3f}, vote@{args.eval_samples} {r['vote']:.3f}")
    print(f"wrote {args.out} ({size} bytes, sha256 {sha}), {eval_out}; training {train_s:.0f} s, "
          f"eval {eval_s:.0f} s, total {total_s:.0f} s", flush=True)

    def summary(r):
        return {k: v for k, v in r.items() if k not in ("per_problem", "greedy_text")}

    report = {
        "command": " ".join(sys.argv), "args": vars(args), "config": cfg.as_dict(),
        "parameters": n_params, "task": spec.describe(), "train_problems": len(train),
        "final_train_loss": final_loss, "eval_loss_f16": eval_loss, "log": log,
        "train_seconds": train_s, "eval_seconds": eval_s, "total_seconds": total_s,
        "gguf_bytes": size, "gguf_sha256": sha, "torch": torch.__version__,
        "eval": summary(res), "extra_evals": [summary(r) for r in extra.values()],
    }
    with open(report_out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
