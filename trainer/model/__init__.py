"""What is trained and how it learns.

  models.py      our small models by name, and build_model for every --model
  names.py       the names --model accepts, without TensorFlow (checked before it starts)
  backbones.py   keras.applications backbones with our input adapter, pooling and head
  heads.py       the run's list of heads: one on `label`, or one per attribute (--heads)
  objective.py   the loss (label smoothing, class weights) and the base optimizer
  schedule.py    the learning rate: warm-up, then cosine or step decay
  precision.py   the precision policy, loss scaling, XLA
  precise_bn.py  batch-norm statistics recomputed with the final weights

Never imports trainer.runtime or trainer.results (tests/test_layering.py)."""
