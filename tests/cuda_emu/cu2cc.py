#!/usr/bin/env python3
"""Rewrites a kernels/*.cu file as C++ for the CUDA emulator (tests/cuda_emu/README.md):
`Kernel<<<grid, block[, shared[, stream]]>>>(args)` becomes an emu::Launch of a lambda that calls
the kernel, `extern __shared__ float smem[];` the emulator's dynamic shared memory, and each static
`__shared__ T name[N];` (or `__shared__ T name;`) a reference into the emulator's per-block
static shared memory (fresh garbage for every block).
Usage: cu2cc.py IN.cu OUT.cc"""
import re
import sys


def split_top_level(text):
    parts, depth, cur = [], 0, ''
    for ch in text:
        if ch in '(<[{':
            depth += 1
        elif ch in ')>]}':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur.strip())
            cur = ''
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def convert(src):
    launch = re.compile(r'([A-Za-z_][\w:]*(?:<[^;<>]*>)?)\s*<<<(.*?)>>>\s*\(', re.S)
    out, pos = '', 0
    for m in launch.finditer(src):
        i, depth = m.end(), 1
        while depth:
            if src[i] == '(':
                depth += 1
            elif src[i] == ')':
                depth -= 1
            i += 1
        args = src[m.end():i - 1]
        cfg = split_top_level(m.group(2))
        cfg += ['0'] * (3 - len(cfg))
        out += src[pos:m.start()]
        out += f'emu::Launch(dim3({cfg[0]}), dim3({cfg[1]}), {cfg[2]}, [=] {{ {m.group(1)}({args}); }})'
        pos = i
    out += src[pos:]
    dynamic = 'extern __shared__ float smem[];'
    if dynamic in out:
        out = out.replace(dynamic, 'float* smem = static_cast<float*>(emu::Dynamic());')
    static = re.compile(r'__shared__\s+([\w:]+)\s+(\w+)((?:\[[^\]]+\])*)\s*;')
    out = static.sub(
        lambda m: f'{m.group(1)} (&{m.group(2)}){m.group(3)} = *static_cast<{m.group(1)} (*){m.group(3)}>('
        f'emu::StaticShared("{m.group(2)}", __LINE__, sizeof({m.group(1)}{m.group(3)})));'
        if m.group(3) else
        f'{m.group(1)}& {m.group(2)} = *static_cast<{m.group(1)}*>('
        f'emu::StaticShared("{m.group(2)}", __LINE__, sizeof({m.group(1)})));', out)
    if '<<<' in out or '__shared__' in out:
        sys.exit(f'cu2cc: unconverted CUDA syntax left in {sys.argv[1]}')
    return out


if __name__ == '__main__':
    with open(sys.argv[1]) as f:
        text = convert(f.read())
    with open(sys.argv[2], 'w') as f:
        f.write(f'// Generated from {sys.argv[1]} by tests/cuda_emu/cu2cc.py: do not edit.\n' + text)
