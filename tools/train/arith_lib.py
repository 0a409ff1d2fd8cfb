"""Shared pieces of the Chorus arithmetic model: the task, the tokenizer, the model, sampling,
scoring and the GGUF writer/reader. Written for Chorus (see tools/train/README.md); no code was
taken from other projects.

Everything here follows what Chorus's loader implements for general.architecture = "llama":
  - tokenizer.ggml.model = "llama" (SentencePiece-style): single-character pieces, "\u2581" for
    the space, <0xXX> byte tokens for everything else (the newline is <0x0A>), no dummy-prefix
    space (tokenizer.ggml.add_space_prefix = false), BOS added, EOS ends generation;
  - RMSNorm (eps 1e-5), RoPE on adjacent pairs (x[2i], x[2i+1]) = GGML's normal mode, which is
    what Chorus applies for "llama" (so the q/k rows need no permutation), GQA where query head
    h reads kv head h / (heads / kv_heads), SwiGLU feed-forward, untied output matrix;
  - tensor names blk.N.attn_q.weight ... with ne = [in_features, out_features], i.e. a
    PyTorch Linear weight [out, in] written row by row as it is.
"""

import math
import random
import re
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# The task: chained addition written as worked steps.
#
#   question: "What is 347+85+619?"
#   solution: "347+85=432\n432+619=1051\nanswer: 1051"
#
# The model is trained on  <s> question "\n" solution </s>  and asked with the question alone
# (it writes the newline itself), so the prompt of an eval line is exactly its "question".


class TaskSpec:
    def __init__(self, min_terms=3, max_terms=4, min_digits=2, max_digits=3):
        self.min_terms, self.max_terms = min_terms, max_terms
        self.min_digits, self.max_digits = min_digits, max_digits

    def describe(self):
        return (f"{self.min_terms}-{self.max_terms} terms of {self.min_digits}-{self.max_digits} "
                f"digits each (digit count uniform, then value uniform)")


def make_problem(rng: random.Random, spec: TaskSpec):
    k = rng.randint(spec.min_terms, spec.max_terms)
    terms = []
    for _ in range(k):
        d = rng.randint(spec.min_digits, spec.max_digits)
        terms.append(rng.randint(10 ** (d - 1), 10 ** d - 1))
    question = "What is " + "+".join(str(t) for t in terms) + "?"
    lines = []
    acc = terms[0]
    for t in terms[1:]:
        lines.append(f"{acc}+{t}={acc + t}")
        acc += t
    lines.append(f"answer: {acc}")
    return question, "\n".join(lines), acc


# ----------------------------------------------------------------------------------------------
# Tokenizer: <unk> <s> </s>, 256 byte tokens, then "\u2581" and the printable ASCII characters
# 33..126 as single-character pieces. No piece is longer than one character, so SentencePiece's
# merge loop never merges and encoding is one token per character (bytes for anything else).

SPACE = "\u2581"
UNK, BOS, EOS = 0, 1, 2
TYPE_NORMAL, TYPE_UNKNOWN, TYPE_CONTROL, TYPE_BYTE = 1, 2, 3, 6


class CharTokenizer:
    def __init__(self):
        self.tokens = ["<unk>", "<s>", "</s>"]
        self.types = [TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL]
        for b in range(256):
            self.tokens.append(f"<0x{b:02X}>")
            self.types.append(TYPE_BYTE)
        self.byte_base = 3
        self.pieces = [SPACE] + [chr(c) for c in range(33, 127)]
        for p in self.pieces:
            self.tokens.append(p)
            self.types.append(TYPE_NORMAL)
        self.scores = [0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(len(self.pieces))]
        self.piece_id = {p: i for i, p in enumerate(self.tokens) if self.types[i] == TYPE_NORMAL}

    @property
    def vocab_size(self):
        return len(self.tokens)

    def encode(self, text, bos=True):
        ids = [BOS] if bos else []
        for ch in text:
            p = SPACE if ch == " " else ch
            if p in self.piece_id:
                ids.append(self.piece_id[p])
            else:
                ids.extend(self.byte_base + b for b in ch.encode("utf-8"))
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            t = self.types[i]
            if t == TYPE_BYTE:
                out.append(i - self.byte_base)
            elif t == TYPE_NORMAL:
                out += self.tokens[i].replace(SPACE, " ").encode("utf-8")
        return out.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------
# Model


class Config:
    def __init__(self, vocab_size, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384,
                 context_length=128, rope_base=10000.0, norm_eps=1e-5):
        self.vocab_size, self.dim, self.n_layers = vocab_size, dim, n_layers
        self.n_heads, self.n_kv_heads, self.ffn_dim = n_heads, n_kv_heads, ffn_dim
        self.context_length, self.rope_base, self.norm_eps = context_length, rope_base, norm_eps
        self.head_dim = dim // n_heads

    def as_dict(self):
        return dict(self.__dict__)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(cfg, positions):
    """cos/sin [T, head_dim/2] for RoPE pair i at each position (frequency base^(-2i/d))."""
    half = cfg.head_dim // 2
    freq = 1.0 / (cfg.rope_base ** (torch.arange(half, dtype=torch.float64) * 2 / cfg.head_dim))
    ang = positions.to(torch.float64)[:, None] * freq[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x, cos, sin):
    """x [B, heads, T, hd]; rotates the adjacent pairs (x[2i], x[2i+1])."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    r0 = x0 * cos - x1 * sin
    r1 = x0 * sin + x1 * cos
    return torch.stack((r0, r1), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, hd = cfg.dim, cfg.head_dim
        self.cfg = cfg
        self.attn_norm = RMSNorm(d, cfg.norm_eps)
        self.wq = nn.Linear(d, cfg.n_heads * hd, bias=False)
        self.wk = nn.Linear(d, cfg.n_kv_heads * hd, bias=False)
        self.wv = nn.Linear(d, cfg.n_kv_heads * hd, bias=False)
        self.wo = nn.Linear(cfg.n_heads * hd, d, bias=False)
        self.ffn_norm = RMSNorm(d, cfg.norm_eps)
        self.gate = nn.Linear(d, cfg.ffn_dim, bias=False)
        self.up = nn.Linear(d, cfg.ffn_dim, bias=False)
        self.down = nn.Linear(cfg.ffn_dim, d, bias=False)

    def forward(self, x, cos, sin, cache=None):
        c = self.cfg
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.wq(h).view(B, T, c.n_heads, c.head_dim).transpose(1, 2)
        k = self.wk(h).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
        v = self.wv(h).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = 0
        if cache is not None:
            if cache["k"] is not None:
                past = cache["k"].shape[2]
                k = torch.cat((cache["k"], k), dim=2)
                v = torch.cat((cache["v"], v), dim=2)
            cache["k"], cache["v"] = k, v
        group = c.n_heads // c.n_kv_heads
        if group > 1:  # query head h reads kv head h // group
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(c.head_dim))
        S = k.shape[2]
        mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=past)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, c.n_heads * c.head_dim)
        x = x + self.wo(o)
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_embd = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.out_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    def init_weights(self, gen):
        std = 0.02
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                continue
            s = std / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("wo.weight", "down.weight")) else std
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * s)

    def forward(self, tokens, pos0=0, caches=None):
        B, T = tokens.shape
        cos, sin = rope_tables(self.cfg, torch.arange(pos0, pos0 + T))
        x = self.tok_embd(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, None if caches is None else caches[i])
        return self.output(self.out_norm(x))


def round_weights_to_f16(model):
    """Every 2-D weight becomes what the F16 GGUF stores (norms stay F32)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())


# ----------------------------------------------------------------------------------------------
# Generation (batched, KV cache; all prompts of a batch have the same length)


@torch.no_grad()
def generate(model, prompts, max_new, temperature, gen=None):
    """prompts: list of token lists of equal length. Returns (list of generated ids without the
    EOS, list of mean logprob of the generated tokens under the raw model)."""
    B = len(prompts)
    caches = [{"k": None, "v": None} for _ in model.layers]
    x = torch.tensor(prompts, dtype=torch.long)
    pos = 0
    out = [[] for _ in range(B)]
    lps = [[] for _ in range(B)]
    done = [False] * B
    for _ in range(max_new):
        logits = model(x, pos, caches)[:, -1, :]
        pos += x.shape[1]
        logp = torch.log_softmax(logits, -1)
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, -1)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        for b in range(B):
            if done[b]:
                continue
            t = int(nxt[b])
            if t == EOS or t == BOS:
                done[b] = True
            else:
                out[b].append(t)
                lps[b].append(float(logp[b, t]))
        if all(done):
            break
        x = nxt[:, None]
    mean_lp = [sum(l) / len(l) if l else 0.0 for l in lps]
    return out, mean_lp


def by_length(items, key):
    groups = {}
    for i, it in enumerate(items):
        groups.setdefault(len(key(it)), []).append(i)
    return groups


# ----------------------------------------------------------------------------------------------
# Scoring, as Chorus's default answer extraction does it (src/agents/merge.cc): the text after
# the last "answer:" up to the end of its line; otherwise the last number.

_LAST_NUM = re.compile(r"-?[\d.,]*\d")


def extract_answer(text):
    low = text.lower()
    at = low.rfind("answer:")
    if at >= 0:
        rest = text[at + len("answer:"):].split("\n", 1)[0]
        a = " ".join(rest.split()).lower().rstrip(".")
        if a:
            return a
    nums = _LAST_NUM.findall(text)
    return nums[-1].replace(",", "").lstrip(".") if nums else " ".join(text.split()).lower()


def vote(answers, mean_lps):
    """Majority answer; a tie goes to the answer whose best draft has the best mean logprob."""
    counts, best = {}, {}
    for a, lp in zip(answers, mean_lps):
        counts[a] = counts.get(a, 0) + 1
        best[a] = max(best.get(a, -1e30), lp)
    return max(counts, key=lambda a: (counts[a], best[a]))


@torch.no_grad()
def evaluate(model, tok, problems, n_samples, temperature, seed, max_new=64):
    """problems: list of (question, answer:int). Returns a dict of accuracies and per-problem
    details: greedy accuracy, single-sample accuracy (mean over all samples), vote@n."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [tok.encode(q) for q, _ in problems]
    greedy = [None] * len(problems)
    samples = [None] * len(problems)
    for _, idx in sorted(by_length(prompts, lambda p: p).items()):
        g, _ = generate(model, [prompts[i] for i in idx], max_new, 0.0)
        for j, i in enumerate(idx):
            greedy[i] = tok.decode(g[j])
        rep = [prompts[i] for i in idx for _ in range(n_samples)]
        s, lp = generate(model, rep, max_new, temperature, gen)
        for j, i in enumerate(idx):
            samples[i] = [(tok.decode(s[j * n_samples + r]), lp[j * n_samples + r])
                          for r in range(n_samples)]
    g_ok = s_ok = v_ok = 0
    per = []
    for i, (q, ans) in enumerate(problems):
        gold = str(ans)
        ga = extract_answer(greedy[i])
        sa = [extract_answer(t) for t, _ in samples[i]]
        va = vote(sa, [lp for _, lp in samples[i]])
        n_ok = sum(a == gold for a in sa)
        g_ok += ga == gold
        s_ok += n_ok
        v_ok += va == gold
        per.append({"question": q, "gold": gold, "greedy": ga, "samples": sa, "vote": va})
    n = len(problems)
    return {"greedy": g_ok / n, "single": s_ok / (n * n_samples), "vote": v_ok / n,
            "n": n, "samples": n_samples, "temperature": temperature, "per_problem": per,
            "greedy_text": greedy}


# ----------------------------------------------------------------------------------------------
# GGUF v3 writer and reader (numpy)

GGUF_MAGIC = 0x46554747
T_U32, T_I32, T_F32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9
GGML_F32, GGML_F16 = 0, 1
ALIGN = 32


class GgufWriter:
    def __init__(self):
        self.kv = []
        self.tensors = []

    def u32(self, k, v): self.kv.append((k, T_U32, v))
    def f32(self, k, v): self.kv.append((k, T_F32, v))
    def bool(self, k, v): self.kv.append((k, T_BOOL, v))
    def string(self, k, v): self.kv.append((k, T_STRING, v))
    def array(self, k, elem, v): self.kv.append((k, T_ARRAY, (elem, v)))

    def tensor(self, name, arr, ggml_type):
        """arr: numpy array in PyTorch order (rows, cols) or (n,); GGUF ne is reversed."""
        arr = np.ascontiguousarray(arr.astype(np.float16 if ggml_type == GGML_F16 else np.float32))
        self.tensors.append((name, list(reversed(arr.shape)), ggml_type, arr.tobytes()))

    @staticmethod
    def _str(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def _value(self, t, v):
        if t == T_U32:
            return struct.pack("<I", v)
        if t == T_I32:
            return struct.pack("<i", v)
        if t == T_F32:
            return struct.pack("<f", v)
        if t == T_BOOL:
            return struct.pack("<B", 1 if v else 0)
        if t == T_STRING:
            return self._str(v)
        elem, items = v
        return struct.pack("<IQ", elem, len(items)) + b"".join(self._value(elem, x) for x in items)

    def serialize(self):
        out = bytearray(struct.pack("<IIQQ", GGUF_MAGIC, 3, len(self.tensors), len(self.kv)))
        for k, t, v in self.kv:
            out += self._str(k) + struct.pack("<I", t) + self._value(t, v)
        offset = 0
        for name, ne, ty, data in self.tensors:
            out += self._str(name) + struct.pack("<I", len(ne))
            out += b"".join(struct.pack("<Q", n) for n in ne)
            out += struct.pack("<IQ", ty, offset)
            offset = (offset + len(data) + ALIGN - 1) // ALIGN * ALIGN
        out += b"\0" * (-len(out) % ALIGN)
        for _, _, _, data in self.tensors:
            out += data + b"\0" * (-len(data) % ALIGN)
        return bytes(out)


def export_gguf(model, tok, path, name, description):
    c = model.cfg
    w = GgufWriter()
    w.string("general.architecture", "llama")
    w.string("general.name", name)
    w.string("general.description", description)
    w.u32("llama.context_length", c.context_length)
    w.u32("llama.embedding_length", c.dim)
    w.u32("llama.block_count", c.n_layers)
    w.u32("llama.feed_forward_length", c.ffn_dim)
    w.u32("llama.attention.head_count", c.n_heads)
    w.u32("llama.attention.head_count_kv", c.n_kv_heads)
    w.u32("llama.rope.dimension_count", c.head_dim)
    w.f32("llama.rope.freq_base", c.rope_base)
    w.f32("llama.attention.layer_norm_rms_epsilon", c.norm_eps)
    w.u32("llama.vocab_size", tok.vocab_size)
    w.string("tokenizer.ggml.model", "llama")
    w.array("tokenizer.ggml.tokens", T_STRING, tok.tokens)
    w.array("tokenizer.ggml.scores", T_F32, tok.scores)
    w.array("tokenizer.ggml.token_type", T_I32, tok.types)
    w.u32("tokenizer.ggml.bos_token_id", BOS)
    w.u32("tokenizer.ggml.eos_token_id", EOS)
    w.u32("tokenizer.ggml.unknown_token_id", UNK)
    w.bool("tokenizer.ggml.add_bos_token", True)
    w.bool("tokenizer.ggml.add_eos_token", False)
    w.bool("tokenizer.ggml.add_space_prefix", False)

    def t2(name, p):
        w.tensor(name, p.detach().float().numpy(), GGML_F16)

    def t1(name, p):
        w.tensor(name, p.detach().float().numpy(), GGML_F32)

    t2("token_embd.weight", model.tok_embd.weight)
    t1("output_norm.weight", model.out_norm.weight)
    t2("output.weight", model.output.weight)
    for i, L in enumerate(model.layers):
        p = f"blk.{i}."
        t1(p + "attn_norm.weight", L.attn_norm.weight)
        t2(p + "attn_q.weight", L.wq.weight)
        t2(p + "attn_k.weight", L.wk.weight)
        t2(p + "attn_v.weight", L.wv.weight)
        t2(p + "attn_output.weight", L.wo.weight)
        t1(p + "ffn_norm.weight", L.ffn_norm.weight)
        t2(p + "ffn_gate.weight", L.gate.weight)
        t2(p + "ffn_up.weight", L.up.weight)
        t2(p + "ffn_down.weight", L.down.weight)
    data = w.serialize()
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def read_gguf(path):
    """Returns (metadata dict, {name: numpy float32 array in PyTorch order})."""
    buf = open(path, "rb").read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def rstr():
        nonlocal pos
        n = take("<Q")
        s = buf[pos:pos + n].decode("utf-8")
        pos += n
        return s

    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q",
              11: "<q", 12: "<d"}

    def rval(t):
        if t == T_STRING:
            return rstr()
        if t == T_ARRAY:
            elem, n = take("<I"), take("<Q")
            return [rval(elem) for _ in range(n)]
        return take(scalar[t])

    magic, version, n_tensors, n_kv = take("<IIQQ")
    assert magic == GGUF_MAGIC and version == 3, "not a GGUF v3 file"
    meta = {}
    for _ in range(n_kv):
        k = rstr()
        meta[k] = rval(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = rstr()
        nd = take("<I")
        ne = [take("<Q") for _ in range(nd)]
        ty, off = take("<IQ")
        infos.append((name, ne, ty, off))
    align = meta.get("general.alignment", ALIGN)
    base = (pos + align - 1) // align * align
    tensors = {}
    for name, ne, ty, off in infos:
        dt = {GGML_F32: np.float32, GGML_F16: np.float16}[ty]
        n = int(np.prod(ne))
        a = np.frombuffer(buf, dtype=dt, count=n, offset=base + off).astype(np.float32)
        tensors[name] = a.reshape(list(reversed(ne)))
    return meta, tensors


def model_from_gguf(path):
    meta, t = read_gguf(path)
    cfg = Config(vocab_size=t["token_embd.weight"].shape[0],
                 dim=meta["llama.embedding_length"], n_layers=meta["llama.block_count"],
                 n_heads=meta["llama.attention.head_count"],
                 n_kv_heads=meta["llama.attention.head_count_kv"],
                 ffn_dim=meta["llama.feed_forward_length"],
                 context_length=meta["llama.context_length"],
                 rope_base=meta["llama.rope.freq_base"],
                 norm_eps=meta["llama.attention.layer_norm_rms_epsilon"])
    m = Llama(cfg)
    sd = {"tok_embd.weight": "token_embd.weight", "out_norm.weight": "output_norm.weight",
          "output.weight": "output.weight"}
    names = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
             "wo": "attn_output", "ffn_norm": "ffn_norm", "gate": "ffn_gate", "up": "ffn_up",
             "down": "ffn_down"}
    for i in range(cfg.n_layers):
        for ours, theirs in names.items():
            sd[f"layers.{i}.{ours}.weight"] = f"blk.{i}.{theirs}.weight"
    assert set(sd.values()) == set(t.keys()), "tensor set differs from the exporter's"
    m.load_state_dict({k: torch.from_numpy(t[v].copy()) for k, v in sd.items()})
    m.eval()
    return m, meta
