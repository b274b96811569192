"""The one-way arrows of DESIGN.md: the trainer imports only the dataset contract from
pipeline/, and the contract modules never import Beam."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONTRACT = {"pipeline.records", "pipeline.manifest", "pipeline.storage"}


def imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_trainer_imports_only_the_contract_from_pipeline():
    for path in (ROOT / "trainer").glob("*.py"):
        outside = {m for m in imports(path) if m.split(".")[0] == "pipeline"
                   and not any(m == c or m.startswith(c + ".") for c in CONTRACT)}
        assert not outside, f"{path.name} imports {outside} from pipeline/"


def test_contract_modules_do_not_import_beam_or_the_trainer():
    for name in CONTRACT:
        path = ROOT / (name.replace(".", "/") + ".py")
        bad = {m for m in imports(path) if m.split(".")[0] in ("apache_beam", "trainer", "horovod")}
        assert not bad, f"{path.name} imports {bad}"


def test_pipeline_never_imports_the_trainer():
    for path in (ROOT / "pipeline").glob("*.py"):
        assert not {m for m in imports(path) if m.split(".")[0] == "trainer"}, path.name
