"""The pipeline builds for each cluster runner from Beam's own flags (built and translated to
the portable Runner API, not run: no Flink, Spark or Dataflow service is reachable here)."""
import apache_beam as beam
import pytest

from pipeline.job import build
from pipeline.plan import Plan, make_options
from pipeline.dataset.storage import Storage
from tests.helpers import png

RUNNERS = {
    "FlinkRunner": ["--flink_master=flink-jobmanager:8081", "--flink_version=1.20", "--environment_type=EXTERNAL",
                    "--environment_config=localhost:50000"],
    "SparkRunner": ["--spark_master_url=spark://spark-master:7077", "--environment_type=DOCKER"],
    "DataflowRunner": ["--project=my-project", "--region=europe-west1",
                       "--temp_location=gs://my-bucket/tmp"],
}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_pipeline_builds_for_cluster_runner(runner, tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cat" / "1.png").write_bytes(png(8, 8, 1))
    options = make_options([f"--runner={runner}", *RUNNERS[runner], "--source",
                            str(tmp_path / "images"), "--output", str(tmp_path / "out")])
    plan = Plan(options, Storage())
    assert plan.layout == "folders"
    pipeline = beam.Pipeline(options=options)        # the runner named by --runner
    assert type(pipeline.runner).__name__ == runner
    build(pipeline, plan, Storage())
    proto = pipeline.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"WriteShards", "WriteShards/GroupByShard", "DropDuplicates", "Publish"} <= names
