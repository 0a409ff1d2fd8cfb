#!/usr/bin/env python3
"""Checks an exported arithmetic GGUF against Chorus's own binary (build/src/tools/chorus-run).

    /usr/bin/python3 tools/train/check_gguf.py --model models/arith.gguf \
        --eval models/arith-eval.jsonl

1. Tokenizer: chorus-run --tokenize gives the ids this script's tokenizer gives, for every eval
   question and worked answer; decode(encode(text)) == text.
2. Greedy: the weights are read back from the GGUF file into the PyTorch model (the reader is
   independent of the training run), and the greedy continuation of --greedy-prompts eval
   questions is compared with chorus-run --temperature 0, token for token (the text is compared,
   and the PyTorch tokens are checked to be the canonical encoding of their text, so equal text
   means equal tokens).
3. Sampling: chorus-run with seeds 1..N at --temperature on --sampled-problems eval problems;
   single-sample accuracy and vote@N (Chorus's answer extraction: the text after "answer:")
   next to the same numbers from PyTorch's own sampler on the same problems.
"""

import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arith_lib as A  # noqa: E402


def run(cmd, stdin=None):
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr}")
    return r.stdout


def summarize(single, vote, seed=0, n_boot=10000):
    """single[i]: fraction of problem i's samples that are right; vote[i]: 0/1 (or a split tie).
    Means with 95% percentile-bootstrap intervals over problems (paired for the difference)."""
    import random
    rng = random.Random(seed)
    n = len(single)
    diff = [v - s for s, v in zip(single, vote)]
    stats = {"single": [], "vote": [], "gain": []}
    for _ in range(n_boot):
        idx = [rng.randrange(n) for _ in range(n)]
        stats["single"].append(sum(single[i] for i in idx) / n)
        stats["vote"].append(sum(vote[i] for i in idx) / n)
        stats["gain"].append(sum(diff[i] for i in idx) / n)
    out = {}
    for k, xs in (("single", single), ("vote", vote), ("gain", diff)):
        b = sorted(stats[k])
        out[k] = {"mean": sum(xs) / n, "ci95": [b[int(0.025 * n_boot)], b[int(0.975 * n_boot) - 1]]}
    return out


def fmt(sm, n):
    f = lambda k: (f"{k} {sm[k]['mean']:.3f} [{sm[k]['ci95'][0]:.3f}, {sm[k]['ci95'][1]:.3f}]")
    return f"{f('single')}  vote@{n} {sm['vote']['mean']:.3f} [{sm['vote']['ci95'][0]:.3f}, " \
           f"{sm['vote']['ci95'][1]:.3f}]  {f('gain')}"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="models/arith.gguf")
    p.add_argument("--eval", default="models/arith-eval.jsonl")
    p.add_argument("--chorus-run", default=os.path.join(root, "build/src/tools/chorus-run"))
    p.add_argument("--greedy-prompts", type=int, default=20)
    p.add_argument("--sampled-problems", type=int, default=200)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=99, help="PyTorch sampler seed")
    p.add_argument("--skip-chorus-run-sampling", action="store_true",
                   help="skip step 3's chorus-run calls (about 0.5 s each)")
    p.add_argument("--server", default=None, metavar="HOST:PORT",
                   help="also run each problem once against a chorusd serving --model, with "
                        "--samples agents merged by VOTE (build/src/chorus generate --json)")
    p.add_argument("--json", default=None, help="write the measured numbers here")
    args = p.parse_args()
    torch.set_num_threads(1)
    cr = args.chorus_run
    tok = A.CharTokenizer()
    probs = [json.loads(l) for l in open(args.eval)]
    gold = [p_["answer"].rsplit("####", 1)[1].strip() for p_ in probs]
    out = {"model": args.model}

    # 1. tokenizer
    texts = [p_["question"] for p_ in probs] + [p_["question"] + "\n" + p_["answer"] for p_ in probs]
    joined = "\x00".join(texts)  # one call for all (each call takes ~0.5 s); a few alone too
    for t in texts[:5] + texts[-5:]:
        ids = [int(x) for x in run([cr, "--model", args.model, "--tokenize"], t).split()]
        assert ids == tok.encode(t, bos=False), f"tokenize differs on {t!r}: {ids}"
    ids = [int(x) for x in run([cr, "--model", args.model, "--tokenize"], joined).split()]
    assert ids == tok.encode(joined, bos=False), "tokenize differs on the joined eval texts"
    for t in texts:
        assert tok.decode(tok.encode(t)) == t
    print(f"tokenizer: chorus-run --tokenize == ours on {len(texts)} texts "
          f"({len(ids)} tokens); decode(encode(x)) == x", flush=True)
    out["tokenize_texts"] = len(texts)

    # 2. greedy, weights read back from the file
    model, _ = A.model_from_gguf(args.model)
    n_g = min(args.greedy_prompts, len(probs))
    same = 0
    for i in range(n_g):
        q = probs[i]["question"]
        ids, _ = A.generate(model, [tok.encode(q)], args.max_tokens, 0.0)
        ours = tok.decode(ids[0])
        assert tok.encode(ours, bos=False) == ids[0], "non-canonical greedy tokens"
        theirs = run([cr, "--model", args.model, "--prompt", q, "--temperature", "0",
                      "--max-tokens", str(args.max_tokens), "--threads", "1"])
        assert theirs.endswith("\n")
        theirs = theirs[:-1]
        if theirs == ours:
            same += 1
        else:
            print(f"GREEDY DIFFERS on {q!r}:\n  torch : {ours!r}\n  chorus: {theirs!r}")
    print(f"greedy: {same}/{n_g} prompts identical (PyTorch from the GGUF vs chorus-run)",
          flush=True)
    out["greedy_identical"], out["greedy_prompts"] = same, n_g
    if same != n_g:
        raise SystemExit("greedy outputs differ: the export or Chorus's forward pass is wrong")

    # 3. sampling: chorus-run seeds 1..N vs PyTorch's sampler on the same problems
    n_s = min(args.sampled_problems, len(probs))
    c_single = c_vote = c_ties = 0
    cr_single, cr_vote = [], []
    for i in range(0 if args.skip_chorus_run_sampling else n_s):
        answers = []
        for s in range(1, args.samples + 1):
            t = run([cr, "--model", args.model, "--prompt", probs[i]["question"], "--temperature",
                     str(args.temperature), "--seed", str(s), "--max-tokens",
                     str(args.max_tokens), "--threads", "1"])
            answers.append(A.extract_answer(t))
        counts = {}
        for a in answers:
            counts[a] = counts.get(a, 0) + 1
        top = max(counts.values())
        winners = [a for a in counts if counts[a] == top]
        c_ties += len(winners) > 1
        c_single += sum(a == gold[i] for a in answers)
        # A tie counts as the fraction of tied answers that are right (no logprobs here).
        c_vote += (gold[i] in winners) / len(winners)
        cr_single.append(sum(a == gold[i] for a in answers) / args.samples)
        cr_vote.append((gold[i] in winners) / len(winners))
    res = A.evaluate(model, tok, [(p_["question"], int(g)) for p_, g in zip(probs[:n_s], gold)],
                     args.samples, args.temperature, args.seed, args.max_tokens)
    out.update({
        "problems": n_s, "samples": args.samples, "temperature": args.temperature,
        "torch_greedy": res["greedy"], "torch_single": res["single"], "torch_vote": res["vote"],
    })
    pt = summarize([sum(a == pp["gold"] for a in pp["samples"]) / args.samples
                    for pp in res["per_problem"]],
                   [float(pp["vote"] == pp["gold"]) for pp in res["per_problem"]])
    out["torch_ci95"] = pt
    print(f"sampled, T={args.temperature}, {n_s} problems x {args.samples} "
          f"(95% bootstrap intervals over problems):")
    print(f"  PyTorch (seed {args.seed}), greedy {res['greedy']:.3f}:\n    {fmt(pt, args.samples)}")
    if not args.skip_chorus_run_sampling:
        out.update({"chorus_run_single": c_single / (n_s * args.samples),
                    "chorus_run_vote": c_vote / n_s, "chorus_run_vote_ties": c_ties,
                    "chorus_run_ci95": summarize(cr_single, cr_vote)})
        print(f"  chorus-run (seeds 1..{args.samples}; {c_ties} vote ties split):\n    "
              f"{fmt(out['chorus_run_ci95'], args.samples)}")

    # 4. optional: the server's own VOTE merge over N agents, one request per problem
    if args.server:
        chorus = os.path.join(os.path.dirname(os.path.dirname(cr)), "chorus")
        s_single = s_vote = 0
        sv_single, sv_vote = [], []
        for i in range(n_s):
            r = json.loads(run([chorus, "generate", probs[i]["question"], "--addr", args.server,
                                "--agents", str(args.samples), "--merge", "vote",
                                "--temperature", str(args.temperature), "--seed", str(i + 1),
                                "--max-tokens", str(args.max_tokens), "--json"]))
            drafts = r["drafts"]
            assert len(drafts) == args.samples
            s_single += sum(d.get("answer") == gold[i] for d in drafts)
            winner = r["merge"].get("winner", 0)
            ok = [d for d in drafts if d.get("agent", 0) == winner][0].get("answer") == gold[i]
            s_vote += ok
            sv_single.append(sum(d.get("answer") == gold[i] for d in drafts) / args.samples)
            sv_vote.append(float(ok))
        out.update({"server_single": s_single / (n_s * args.samples), "server_vote": s_vote / n_s,
                    "server_ci95": summarize(sv_single, sv_vote)})
        print(f"  chorusd, {args.samples} agents, VOTE merge (seed i+1 for problem i):\n    "
              f"{fmt(out['server_ci95'], args.samples)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
