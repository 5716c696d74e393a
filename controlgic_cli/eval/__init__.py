"""Measurements: `cgic eval` (rate-distortion against the classic codecs, the gallery), the benchmark, the reports
behind docs/, the quality calibration of a model and the published results drawn for context. The codec never
imports these."""
