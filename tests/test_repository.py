"""The repository itself: imports among its modules flow one way (no cycle), every
link of the README and docs/ resolves, and no tracked file names a commit hash
(history belongs in commits, not in the docs)."""
import ast
import re
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGES = ('comhe', 'common', 'keras_comhe', 'bench', 'experiments', 'examples')


def module_files():
    """{dotted module name: path} of the project's importable code; the modules of tests/
    and tests/helpers/ are top-level names there (both are on the tests' sys.path)."""
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob('*.py'):
            parts = path.relative_to(ROOT).with_suffix('').parts
            files['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    for path in [*(ROOT / 'tests').glob('*.py'), *(ROOT / 'tests' / 'helpers').glob('*.py')]:
        files[path.stem] = path
    return files


def imports_of(name, path, known):
    """The known modules that ``path`` imports anywhere (a function's lazy import too)."""
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(anchor + ([node.module] if node.module else []))
            for a in node.names:
                target = f'{base}.{a.name}' if base else a.name
                if target in known:
                    found.add(target)
                elif base in known:
                    found.add(base)
    found.discard(name)
    return found


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import(tmp_path):
    a, b = tmp_path / 'a.py', tmp_path / 'b.py'
    a.write_text('import b\n')
    b.write_text('def f():\n    from a import g\n')
    graph = {n: imports_of(n, p, {'a', 'b'}) for n, p in (('a', a), ('b', b))}
    assert cycles(graph) == [['a', 'b']]
    assert cycles({'a': {'b'}, 'b': set()}) == []


def test_imports_flow_one_way():
    files = module_files()
    assert {'common.run.config', 'common.tf1_engine.training', 'common.entry', 'keras_comhe.regularizers'} <= set(files)
    graph = {name: imports_of(name, path, files) for name, path in files.items()}
    assert 'common.paper.schedule' in graph['common.run.config']
    assert 'common.paper.schedule' in graph['common.tf1_engine.training']
    assert cycles(graph) == [], 'modules that import each other (directly or around a loop)'


# What each of common's concerns may import of the others: the math stands alone, the data
# and the run code know no engine, the engines not each other.
MAY_IMPORT = {
    'paper': set(),
    'data': set(),
    'run': {'paper', 'data'},
    'tf1_engine': {'paper', 'data', 'run'},
    'keras_engine': {'paper', 'data', 'run'},
    'compare': {'paper', 'run'},
    'sweep': {'paper', 'run', 'compare'},
}


def concern_imports(graph):
    """{(importer's concern, imported concern): [an importing module]} among common's subpackages."""
    found = {}
    for name, targets in graph.items():
        parts = name.split('.')
        if parts[0] != 'common' or len(parts) < 3:
            continue
        for target in targets:
            other = target.split('.')
            if other[0] == 'common' and len(other) >= 3 and other[1] != parts[1]:
                found.setdefault((parts[1], other[1]), []).append(name)
    return found


def test_common_concerns_import_downwards_only():
    files = module_files()
    graph = {name: imports_of(name, path, files) for name, path in files.items()}
    concerns = {p.name for p in (ROOT / 'common').iterdir() if (p / '__init__.py').exists()}
    assert concerns == set(MAY_IMPORT), 'a subpackage of common/ not in MAY_IMPORT (or one gone)'
    found = concern_imports(graph)
    assert ('run', 'paper') in found and ('keras_engine', 'run') in found   # the check sees imports
    wrong = {pair: who for pair, who in found.items() if pair[1] not in MAY_IMPORT[pair[0]]}
    assert not wrong, f'imports against the layering: {wrong}'


def test_the_layering_check_sees_a_wrong_import():
    graph = {'common.run.loop': {'common.tf1_engine.training'}, 'common.paper.model': {'common.data.cifar'}}
    found = concern_imports(graph)
    assert {pair for pair in found if pair[1] not in MAY_IMPORT[pair[0]]} == {('run', 'tf1_engine'), ('paper', 'data')}


def test_the_library_stands_alone():
    """The installable library (comhe, keras_comhe) imports nothing of the reproduction,
    the benchmarks or the tests; its math imports no front."""
    files = module_files()
    graph = {name: imports_of(name, path, files) for name, path in files.items()}
    library = [name for name in graph if name.split('.')[0] in ('comhe', 'keras_comhe')]
    assert {'comhe.energy', 'comhe.torch', 'comhe.jax', 'keras_comhe.regularizers'} <= set(library)
    for name in library:
        outside = {m for m in graph[name] if m.split('.')[0] not in ('comhe', 'keras_comhe')}
        assert not outside, f'{name} imports {outside}'
    for name in ('comhe.energy', 'comhe.projections', 'comhe.namespaces'):
        fronts = {m for m in graph[name] if m in ('comhe.torch', 'comhe.jax') or m.startswith('keras_comhe')}
        assert not fronts, f'the math ({name}) imports a front: {fronts}'


LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def anchors(markdown):
    """GitHub's anchors of a Markdown file's headings."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith('#'):
            title = line.lstrip('#').strip().lower()
            title = re.sub(r'[^\w\- ]', '', title)
            out.add(title.replace(' ', '-'))
    return out


def doc_files():
    return [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]


def test_every_link_of_the_readme_and_docs_resolves():
    assert len(doc_files()) >= 7   # README and docs/: protocol, running, sweeps, performance, ...
    broken = []
    for doc in doc_files():
        text = doc.read_text()
        for target in LINK.findall(text):
            if re.match(r'[a-z]+:', target):   # http(s):, mailto:
                continue
            path, _, anchor = target.partition('#')
            resolved = (doc.parent / path).resolve() if path else doc
            if not resolved.exists():
                broken.append(f'{doc.relative_to(ROOT)}: {target} (no such file)')
            elif anchor and resolved.suffix == '.md' and anchor not in anchors(resolved.read_text()):
                broken.append(f'{doc.relative_to(ROOT)}: {target} (no such heading)')
    assert broken == []


def test_the_readme_is_short_and_each_doc_says_what_it_is_for():
    assert len((ROOT / 'README.md').read_text().splitlines()) <= 250
    for doc in doc_files()[1:]:
        lines = doc.read_text().splitlines()
        assert lines[0].startswith('# ') and lines[2].strip(), f'{doc.name}: a title, then what it is for'


# Short or full SHA-1s: 7 to 12 or 40 hex digits, with a letter and a digit (so a plain
# number is not one; md5 sums have 32 digits and are not matched).
COMMIT_LIKE = re.compile(r'\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])(?:[0-9a-f]{7,12}|[0-9a-f]{40})\b')


def tracked_text_files():
    try:
        listed = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('not a git checkout: no tracked files to check')
    for name in listed.stdout.decode().split('\0'):
        path = ROOT / name
        if name and path.is_file():
            try:
                yield name, path.read_text()
            except UnicodeDecodeError:
                continue   # a figure


def test_the_commit_pattern_finds_hashes_and_not_numbers_or_md5s():
    short = '52f0' + 'b1f'   # in two parts, so that this file names no hash itself
    text = f'at {short}; 2026-11-28; eb9058c3a382ffc7106e4002c42a8d85; 1234567; deadbeef'
    assert COMMIT_LIKE.findall(text) == [short]


def test_no_tracked_file_names_a_commit_hash():
    found = [f'{name}:{n}: {m}' for name, text in tracked_text_files()
             for n, line in enumerate(text.splitlines(), 1) for m in COMMIT_LIKE.findall(line)]
    assert found == [], 'history belongs in commits; say what was measured, when and where instead'


def test_the_development_page_shows_the_layout_in_at_most_30_lines():
    text = (ROOT / 'docs' / 'development.md').read_text()
    layout = text[text.index('## Layout'):].split('\n## ')[0].strip().splitlines()
    assert len(layout) <= 30
    folders = {p.name for p in (ROOT / 'common').iterdir() if (p / '__init__.py').exists()}
    missing = [name for name in sorted(folders) if f'`common/{name}/`' not in '\n'.join(layout)]
    assert not missing, f'common/ folders the layout does not name: {missing}'


def test_a_train_py_imports_no_framework_before_its_flags():
    # --gpu_no must be applied before TensorFlow (or JAX, PyTorch) is imported: what a train.py
    # imports at its top may import none of them.
    code = ('import sys; sys.path.insert(0, "."); import common.entry, common.paper.terms; '
            'print([m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules])')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'
