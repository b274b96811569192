"""Batch scoring (issue 27): `python -m pipeline.score --model <SavedModel URL> --source <prefix>
--output <folder>` applies a trained model's serving signature to every image under a prefix, as
a Beam job on the runners ingestion runs on, and writes its predictions as Parquet.

    ListImages ─ ReadImages ─ Batch ─ Predict ─ KeyByFile ─ WriteFiles
        │            │                  ▲
        └── unread ──┴──── errors ──────┘  (rows with their `error`)

table.py (the rows and their schema), transforms.py (the steps), __main__.py (the command).
One image that cannot be read or decoded gets its error in its row; it never fails its batch."""
