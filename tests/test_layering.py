"""The one-way arrows of DESIGN.md: infra -> trainer -> pipeline.dataset <- pipeline.

pipeline.dataset (the contract) imports no Beam, no trainer, no infra; the trainer imports
nothing of pipeline/ but pipeline.dataset; pipeline/ never imports the trainer; sources never
import the job's steps; nothing outside infra/, tests/ and benchmarks/ imports infra. Inside the
trainer, input/ and model/ never import runtime/ or results/ (what trains and what is trained on
does not depend on how the ranks run it or on what is written at the end)."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


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
