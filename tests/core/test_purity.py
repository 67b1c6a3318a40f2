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
