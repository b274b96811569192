"""How the ranks train together.

  run.py         one run's fit loop: inputs and callbacks per rank, fit, test scores (also elastic)
  callbacks.py   Keras callbacks: position, progress lines, checkpoints, averaged batch-norm
                 statistics, elastic commits, uploads of logs
  guards.py      the divergence stop (NaN/Inf, a loss grown past --divergence-factor)
  agree.py       errors before training agreed over ranks: one line, whichever rank found them
  devices.py     one GPU per rank, CPU threads per rank, Horovod's cycle time
  faults.py      fault injection for tests (infinite gradients at one step)
  profiling.py   --profile: tf.profiler trace and Horovod timeline
  inputcheck.py  --check-input: is training input-bound?"""
