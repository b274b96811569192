"""The label check: the label space every record indexes into, and each row turned into a
candidate record (label indices, split) or a quarantine entry saying why not."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.dataset import quarantine
from pipeline.dataset.manifest import SPLITS
from pipeline.elements import Candidate, LabelSpace
from pipeline.sources.rows import QUARANTINE
from pipeline.splits import assign_split


class CheckRow(beam.DoFn):
    """A row (sources/rows.py) -> a Candidate (label indices, split), or a quarantine entry
    saying why not, against the label space."""

    def __init__(self, ratios: dict[str, float]):
        self.ratios = ratios
        self.bad = Metrics.counter("ingest", "quarantined_rows")

    def process(self, row: dict, space: LabelSpace):
        try:
            label_name, attributes = self._labels(row, space)
            split = row["split"] or assign_split(row["id"], self.ratios)
            if split not in SPLITS:
                raise ValueError(f"unknown split: {split!r} (use {', '.join(SPLITS)})")
            if row["image"] is not None and not row["image"]:
                raise ValueError("empty image: the image column is null or empty")
        except ValueError as e:
            self.bad.inc()
            yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine.entry(row["id"], row["source"], str(e)))
            return
        yield Candidate(id=row["id"], source=row["source"], url=row["url"], image=row["image"],
                        size=row["size"], split=split, label=space.classes.index(label_name),
                        label_name=label_name, attributes=attributes)

    @staticmethod
    def _labels(row: dict, space: LabelSpace) -> tuple[str, dict[str, int]]:
        if space.primary:
            values = row["attributes"]
            if space.primary not in values:
                raise ValueError(f"missing label: no attribute {space.primary!r} in its file")
            return str(values[space.primary][0]), {a: v for a, (v, _) in values.items()}
        label = row["label"]
        where = f" ({row['labels_at']})" if row.get("labels_at") else ""     # a Parquet table's row
        if not label:
            raise ValueError(f"missing label: the row has no label{where}")
        if label not in space.classes:
            raise ValueError(f"unknown label: {label!r} is not in the class list{where}")
        return label, {}


class CheckRows(beam.PTransform):
    """rows -> (Candidates, quarantine), against the singleton LabelSpace `space`."""

    def __init__(self, ratios: dict[str, float], space):
        super().__init__()
        self.ratios, self.space = ratios, space

    def expand(self, rows):
        checked = (rows | "CheckRow" >> beam.ParDo(CheckRow(self.ratios), beam.pvalue.AsSingleton(self.space))
                   .with_outputs(QUARANTINE, main="candidates"))
        return checked.candidates, checked[QUARANTINE]


class FindLabelSpace(beam.PTransform):
    """rows -> a singleton LabelSpace: the class list(s) records index into. From the attribute
    files, from --classes, or the sorted distinct labels."""

    def __init__(self, layout: str, classes: list[str] | None, label_attribute: str | None):
        super().__init__()
        self.layout, self.classes, self.label_attribute = layout, classes, label_attribute

    def expand(self, rows):
        if self.layout == "attributes":
            return (rows | "AttributeSizes" >> beam.FlatMap(
                        lambda r: [(a, n) for a, (_, n) in r["attributes"].items()])
                         | "Largest" >> beam.CombinePerKey(max)
                         | "AllAttributes" >> beam.combiners.ToDict()
                         | "AttributeSpace" >> beam.Map(LabelSpace.of_attributes, self.label_attribute))
        if self.classes:
            return rows.pipeline | "Classes" >> beam.Create([LabelSpace(tuple(self.classes))])
        return (rows | "LabelNames" >> beam.Map(lambda row: row["label"])
                     | "Distinct" >> beam.Distinct()
                     | "Sorted" >> beam.combiners.ToList()
                     | "LabelSpace" >> beam.Map(lambda names: LabelSpace(tuple(sorted(n for n in names if n)))))
