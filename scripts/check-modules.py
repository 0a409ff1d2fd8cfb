#!/usr/bin/env python3
"""Module structure check (issue 9), run in CI: `make check-modules`.

A module is a folder under src/ with its headers under include/chorus/<module>/ (kernels/ is one
too). This reads every #include "chorus/<module>/..." in src/, include/ and kernels/ and fails when
  1. the modules' include graph has a cycle (printed with one include that makes each edge), or
  2. a source file includes a module whose CMake target its own target does not link, directly
     or through the targets it links (src/CMakeLists.txt and src/tools/CMakeLists.txt are read;
     conditions such as if(CHORUS_HAVE_CUDA) are ignored: a link stated anywhere counts).
  3. code outside scheduler/ and kv_cache/ calls a BlockManager mutator (Allocate, Ref, Unref,
     Lookup, Publish): the scheduler is the one owner of KV blocks.
  4. a source file (src/, include/, kernels/) is over 450 lines, or a function body over 80 lines
     (found by brace matching after string and character literals are blanked: a signature line
     ending in `) {`), so that every function fits on a screen.
Prints the module graph on success.
"""
import collections
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = re.compile(r'^\s*#\s*include\s+"(chorus/([a-z_0-9]+)/[^"]+|kernels/[^"]+)"')
SOURCE = re.compile(r'\.(cc|h|cu|cuh)$')


def module_of(rel):
    parts = rel.split('/')
    if parts[0] == 'kernels':
        return 'kernels'
    if parts[0] == 'src':
        return parts[1] if len(parts) > 2 else None
    if parts[:2] == ['include', 'chorus']:
        return parts[2]
    return None


def files():
    for top in ('src', 'include', 'kernels'):
        for dp, _, names in os.walk(os.path.join(ROOT, top)):
            for n in sorted(names):
                if SOURCE.search(n):
                    yield os.path.relpath(os.path.join(dp, n), ROOT)


def includes(rel):
    with open(os.path.join(ROOT, rel), errors='ignore') as f:
        for line in f:
            m = INCLUDE.match(line)
            if m:
                yield m.group(1), ('kernels' if m.group(1).startswith('kernels/') else m.group(2))


def parse_cmake():
    """target -> (sources relative to ROOT, linked target names)."""
    sources, links = collections.defaultdict(list), collections.defaultdict(set)
    for cm, base in (('src/CMakeLists.txt', 'src'), ('src/tools/CMakeLists.txt', 'src/tools')):
        text = open(os.path.join(ROOT, cm)).read()
        text = re.sub(r'#[^\n]*', '', text)
        for kind, body in re.findall(r'(add_library|add_executable|target_sources|target_link_libraries)\s*\(([^)]*)\)', text):
            words = body.split()
            name, rest = words[0], words[1:]
            if kind in ('add_library', 'add_executable', 'target_sources'):
                for w in rest:
                    if SOURCE.search(w):
                        sources[name].append(os.path.normpath(os.path.join(base, w)))
                    if w == 'INTERFACE':
                        sources.setdefault(name, [])
            else:
                for w in rest:
                    if w.startswith('chorus'):
                        links[name].add(w)
    return sources, links


MAX_FILE_LINES, MAX_FUNCTION_LINES = 450, 80
SIGNATURE = re.compile(r'\)\s*(const)?\s*(override)?\s*(noexcept)?\s*(->\s*[\w:<>]+)?\s*\{$')
CONTROL = re.compile(r'(if|for|while|switch|else|do|catch)\b')


def blank_literals(line):
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    return re.sub(r"'(\\.|[^'\\])'", "' '", line)


def size_problems(rel):
    lines = [blank_literals(x) for x in open(os.path.join(ROOT, rel), errors='ignore').read().split('\n')]
    if len(lines) - 1 > MAX_FILE_LINES:
        yield f'{rel}: {len(lines) - 1} lines (at most {MAX_FILE_LINES})'
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        if not (SIGNATURE.search(s) and not CONTROL.match(s) and not s.startswith('}')):
            i += 1
            continue
        depth, j = 0, i
        while j < len(lines):
            depth += lines[j].count('{') - lines[j].count('}')
            if depth <= 0:
                break
            j += 1
        if j - i + 1 > MAX_FUNCTION_LINES:
            yield f'{rel}:{i + 1}: function of {j - i + 1} lines (at most {MAX_FUNCTION_LINES}): {s[:60]}'
            i = j
        i += 1


def main():
    edges = collections.defaultdict(dict)  # module -> {module: example file}
    file_deps = []
    for rel in files():
        mod = module_of(rel)
        if mod is None:
            continue
        for path, dep in includes(rel):
            if dep != mod:
                edges[mod].setdefault(dep, f'{rel} includes {path}')
                file_deps.append((rel, mod, dep))
    errors = []
    # 1. cycles (Tarjan's strongly connected components).
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
    nodes = set(edges) | {d for m in edges for d in edges[m]}

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            strong(v)
    for comp in sccs:
        errors.append('include cycle between modules: ' + ' '.join(comp))
        for a in comp:
            for b, why in edges[a].items():
                if b in comp:
                    errors.append(f'  {a} -> {b}: {why}')
    # 2. link lines: the target of each file must reach the target of each module it includes.
    sources, links = parse_cmake()
    target_of = {}
    for t, srcs in sources.items():
        for s in srcs:
            target_of.setdefault(s, t)
    by_module = collections.defaultdict(collections.Counter)
    for s, t in target_of.items():
        by_module[module_of(s)][t] += 1
    for t in sources:  # header-only targets: chorus_<module>
        m = t[len('chorus_'):] if t.startswith('chorus_') else None
        if m and not sources[t] and os.path.isdir(os.path.join(ROOT, 'include/chorus', m)):
            by_module[m][t] += 1

    def header_target(rel, mod):
        stem = os.path.splitext(os.path.basename(rel))[0]
        for s, t in target_of.items():
            if module_of(s) == mod and os.path.splitext(os.path.basename(s))[0] == stem:
                return t
        return None  # a header of no one source file: any target of its module will do

    def reach(t, seen=None):
        seen = set() if seen is None else seen
        for l in links.get(t, ()):
            if l not in seen:
                seen.add(l)
                reach(l, seen)
        return seen

    for rel, mod, dep in file_deps:
        if dep == 'kernels' or mod == 'kernels':
            continue
        t = target_of.get(rel) or (header_target(rel, mod) if rel.startswith('include/') else None)
        owners = [t] if t else [x for x, _ in by_module[mod].most_common()]
        dep_targets = [x for x, _ in by_module[dep].most_common()]
        if not owners or not dep_targets:
            continue
        reachable = set().union(*(reach(o) | {o} for o in owners))
        t = t or '/'.join(owners)
        if not any(d in reachable for d in dep_targets):
            errors.append(f'{rel} ({t}) includes module {dep} ({", ".join(dep_targets)}) '
                          f'but {t} does not link it')
    # 3. one owner of KV blocks.
    mutator = re.compile(r'\b\w*blocks?_?\w*\s*(\.|->)\s*(Allocate|Ref|Unref|Lookup|Publish)\s*\(')
    for rel in files():
        if not rel.startswith('src/') or module_of(rel) in ('scheduler', 'kv_cache'):
            continue
        with open(os.path.join(ROOT, rel), errors='ignore') as f:
            for n, line in enumerate(f, 1):
                if mutator.search(line):
                    errors.append(f'{rel}:{n}: BlockManager mutator outside the scheduler: '
                                  f'{line.strip()}')
    # 4. files and functions that fit on a screen.
    for rel in files():
        errors.extend(size_problems(rel))
    if errors:
        print('\n'.join(errors))
        print(f'check-modules: FAILED ({len(errors)} problems)')
        return 1
    for m in sorted(edges):
        print(f'  {m} -> {", ".join(sorted(edges[m]))}')
    print(f'check-modules: {len(nodes)} modules, no include cycle, every include linked, '
          'KV blocks changed by the scheduler only, '
          f'files <= {MAX_FILE_LINES} lines, functions <= {MAX_FUNCTION_LINES} lines')
    return 0


if __name__ == '__main__':
    sys.exit(main())
