"""The one-way arrows of DESIGN.md: infra -> trainer -> pipeline.dataset <- pipeline.

pipeline.dataset (the contract) imports no Beam, no trainer, no infra, TensorFlow only in its
reader modules (load.py, crops.py, headers.py), which the job never imports, and pyarrow only in
index.py; the trainer imports
nothing of pipeline/ but pipeline.dataset; pipeline/ never imports the trainer; sources never
import the job's steps; nothing outside infra/, tests/ and benchmarks/ imports infra. Inside the
trainer, input/ and model/ never import runtime/ or results/ (what trains and what is trained on
does not depend on how the ranks run it or on what is written at the end)."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def imports(path: pathlib.Path, when_imported: bool = False) -> set[str]:
    """Every module `path` imports; `when_imported`: only those its import runs (not the ones
    inside functions or classes)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in (module_level(tree) if when_imported else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def module_level(tree: ast.Module):
    """The nodes an import of the module runs: all but what is inside functions and classes."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node
            stack.extend(ast.iter_child_nodes(node))


def offending(folder: str, allowed, root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    """{module path: its imports that `allowed` refuses}, over every module under root/folder."""
    paths = sorted((root / folder).rglob("*.py"))
    assert paths, folder
    bad = {}
    for path in paths:
        found = {m for m in imports(path) if not allowed(m)}
        if found:
            bad[str(path.relative_to(root))] = found
    return bad


def top(module: str) -> str:
    return module.split(".")[0]


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_contract_imports_no_beam_trainer_or_infra():
    assert not offending("pipeline/dataset", lambda m: top(m) not in ("apache_beam", "trainer", "horovod", "infra")
                         and (top(m) != "pipeline" or within(m, "pipeline.dataset")))


TENSORFLOW_READERS = {"pipeline/dataset/load.py", "pipeline/dataset/crops.py",
                      "pipeline/dataset/headers.py"}   # issue 28: EXIF orientation and sizes in TF ops


def test_the_contract_imports_tensorflow_only_in_its_two_reader_modules():
    importers = {str(path.relative_to(ROOT)) for path in (ROOT / "pipeline" / "dataset").rglob("*.py")
                 if any(top(m) == "tensorflow" for m in imports(path, when_imported=True))}
    assert importers == TENSORFLOW_READERS


PYARROW_MODULES = {"pipeline/dataset/index.py"}    # issue 27: the index as Parquet, load_index


def test_the_contract_imports_pyarrow_only_in_its_index_module():
    importers = {str(path.relative_to(ROOT)) for path in (ROOT / "pipeline" / "dataset").rglob("*.py")
                 if any(top(m) == "pyarrow" for m in imports(path, when_imported=True))}
    assert importers == PYARROW_MODULES


SCORING_MODEL = "pipeline/score/transforms.py"     # issue 27: batch scoring runs a SavedModel


def test_the_job_never_imports_tensorflow_or_the_reader_modules():
    """Batch scoring loads TensorFlow where it applies the model, inside its DoFn; the ingestion
    job never imports batch scoring."""
    readers = {"pipeline.dataset.load", "pipeline.dataset.crops", "pipeline.dataset.headers"}
    bad = offending("pipeline", lambda m: top(m) != "tensorflow" and not any(within(m, r) for r in readers))
    assert not {path: found for path, found in bad.items()
                if not path.startswith("pipeline/dataset/") and path != SCORING_MODEL}
    assert bad[SCORING_MODEL] == {"tensorflow"}
    assert not any(top(m) == "tensorflow" for m in imports(ROOT / SCORING_MODEL, when_imported=True))
    assert not {path: found for path, found in offending("pipeline", lambda m: not within(m, "pipeline.score")).items()
                if not path.startswith("pipeline/score/")}


def test_trainer_imports_only_the_contract_from_pipeline():
    assert not offending("trainer", lambda m: top(m) != "pipeline" or within(m, "pipeline.dataset"))


def test_pipeline_never_imports_the_trainer_or_infra():
    assert not offending("pipeline", lambda m: top(m) not in ("trainer", "infra"))


def test_sources_import_the_contract_and_each_other_only():
    assert not offending("pipeline/sources", lambda m: top(m) != "pipeline" or within(m, "pipeline.dataset")
                         or within(m, "pipeline.sources"))


@pytest.mark.parametrize("folder", ["pipeline", "trainer"])
def test_nothing_outside_infra_tests_and_benchmarks_imports_infra(folder):
    assert not offending(folder, lambda m: top(m) != "infra")


def outside_runtime_and_results(module: str) -> bool:
    return not within(module, "trainer.runtime") and not within(module, "trainer.results")


@pytest.mark.parametrize("room", ["trainer/input", "trainer/model"])
def test_the_trainers_input_and_model_never_import_its_runtime_or_results(room):
    assert not offending(room, outside_runtime_and_results)


def test_a_trainer_room_that_imports_the_runtime_or_results_is_caught(tmp_path):
    """The check above can fail: a model module importing the fit loop and the results is found."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "m.py").write_text("from trainer.runtime.run import Run\nfrom trainer import results\n"
                                             "from trainer.model import heads\n")
    assert offending("model", outside_runtime_and_results, tmp_path) == {
        "model/m.py": {"trainer.runtime.run.Run", "trainer.results"}}


def test_a_module_that_breaks_an_arrow_is_caught(tmp_path):
    """The checks above can fail: Beam and a job step imported by a contract module are found."""
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "m.py").write_text("import apache_beam as beam\nfrom pipeline.plan import Plan\n")
    assert offending("dataset", lambda m: top(m) != "apache_beam" and not within(m, "pipeline.plan"),
                     tmp_path) == {"dataset/m.py": {"apache_beam", "pipeline.plan.Plan"}}
