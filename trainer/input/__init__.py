"""One rank's input: what it reads of a published dataset, in which order, augmented how.

  batching.py     how the global batch is cut: images per update, per rank, steps per epoch
  model_input.py  what the model takes, decided once per run: shape, photo crops, standardisation
  rank_inputs.py  one rank's share of the splits and its tf.data pipelines (RankInputs)
  datasets.py     the tf.data pipelines: the epoch order (EpochPlan), standardisation, batches
  in_memory.py    images of one size decoded once, batches gathered from memory by index
  augment.py      stateless whole-batch augmentation (crops, flips, brightness, contrast, erasing)

Never imports trainer.runtime or trainer.results (tests/test_layering.py)."""
