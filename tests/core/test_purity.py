"""The core is pure: no broker, no Redis, no clock."""
import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "streams" / "core"
FORBIDDEN_MODULES = ("faust", "kafka", "aiokafka", "redis", "time", "datetime")
FORBIDDEN_CALLS = ("time.time", "datetime.now", "datetime.utcnow", "time.monotonic", "date.today")


def test_core_imports_no_framework_and_reads_no_clock():
    for path in CORE.glob("*.py"):
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for n in names:
                assert n.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {n}"
        for call in FORBIDDEN_CALLS:
            assert call not in text, f"{path.name} calls {call}"


def test_core_keeps_no_mutable_module_state_but_bounded_caches():
    """State at module level outlives a model and an account: only BoundedCache (values that are pure
    functions of their key, bounded) may hold any; everything else module-level is immutable."""
    import collections
    import importlib

    from streams.core.cache import BoundedCache

    mutable = (dict, list, set, bytearray, collections.deque)
    for path in sorted(CORE.glob("*.py")):
        module = importlib.import_module(f"streams.core.{path.stem}" if path.stem != "__init__" else "streams.core")
        assigned = set()
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        assigned.add(n.id)
        for name in sorted(assigned):
            value = getattr(module, name)
            if isinstance(value, BoundedCache):
                assert value.limit > 0, f"{path.name}: {name} is unbounded"
                continue
            assert not isinstance(value, mutable), (
                f"{path.name}: module-level {name} is a mutable {type(value).__name__} "
                "(make it immutable: tuple, frozenset, MappingProxyType; or a BoundedCache)")
