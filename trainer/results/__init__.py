"""What a run leaves behind (rank 0, after training).

  finish.py   the end of a run: test metrics, export, plots, report
  scores.py   the test split scored per head, summed over ranks
  metrics.py  the arithmetic: confusion matrices, per-class metrics, ROC/PR (plain numpy)
  export.py   the SavedModel and its serving signature (encoded image bytes in)
  plots.py    training curves, confusion matrix, ROC/PR as PNG files"""
