"""What outlives a process.

  checkpoints.py  complete-or-invisible checkpoints (COMMITTED markers), background upload, resume
  warmstart.py    --init-from (a SavedModel, a checkpoint or a weights file), --freeze"""
