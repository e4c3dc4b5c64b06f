"""Video analysis: one video or a folder of them -> reports, annotated videos, timeline plots.

  video      analyze(path, *, out_dir, ...) -> Report (exported as `mfsa_pipe.analyze`)
  batch      run_batch: a folder of videos, resumable, on local processes or Ray
  inference  Predictor: a checkpoint run on utterances' sequences
  report     Report and its JSON schema (schemas/report.schema.json)
  render     the annotated video and the timeline plot
"""
