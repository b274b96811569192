"""What a run leaves behind (rank 0, after training; the batch pictures when it starts).

  finish.py   the end of a run: test metrics, export, plots, report
  scores.py   the test split scored per head, summed over ranks
  metrics.py  the arithmetic: confusion matrices, per-class metrics, ROC/PR (plain numpy)
  export.py   the SavedModel and its serving signature (encoded image bytes in)
  plots.py    training curves, confusion matrix, ROC/PR as PNG files
  batch_grid.py  train_batch.png, eval_batch.png: the first batches as the model gets them"""
